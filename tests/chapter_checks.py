"""Checks shared by the chapter tests: the results JSON, saved figures, glued numbers == JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from kqlib.report import read_glued


def results(root: Path, name: str) -> dict:
    return json.loads((root / "_build" / "results" / f"{name}.json").read_text())


def check_figures(root: Path, names: dict) -> None:
    """Every figure the results JSON names is saved under _build/figures and not empty (> 5 kB)."""
    assert names
    for name in names.values():
        path = root / "_build" / "figures" / name
        assert path.exists() and path.stat().st_size > 5000, path


def check_glue(root: Path, name: str) -> nbformat.NotebookNode:
    """Glued numbers equal the results JSON; every glue reference in the prose names a glued key; no
    progress-bar or traceback output; at least one figure rendered. Returns the executed notebook."""
    data = results(root, name)
    executed = root / "_build" / "executed" / "book" / f"{name}.ipynb"
    nb = nbformat.read(executed, as_version=4)
    assert "jupytext" not in nb.metadata
    glued = read_glued(executed)
    assert glued and set(glued) <= set(data["numbers"])
    for key, value in glued.items():
        expected = data["numbers"][key]
        if isinstance(value, float):
            assert value == pytest.approx(expected, rel=1e-12), key
        else:
            assert value == expected, key
    text = json.dumps(nb)
    assert "IProgress" not in text and "Traceback" not in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    refs = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            refs |= {m.split(":")[0] for m in re.findall(r"\{glue:text\}`([^`]+)`", cell.source)}
    assert refs and refs <= set(glued), refs - set(glued)
    return nb
