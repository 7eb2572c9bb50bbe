"""Checks shared by the chapter tests: the results JSON, saved figures, glued numbers == JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from kqlib.book.report import read_glued


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


def check_claims(root: Path, name: str) -> list[dict]:
    """The chapter judged every claim claims.toml assigns to it; each stored verdict is what the one rule
    (kqlib.book.claims.verdicts.judge) gives for the stored measurement; the rendered "Paper vs this run" table shows it."""
    from kqlib.book.claims import verdicts as V

    data = results(root, name)
    rows = data["numbers"]["claims"]
    assert {r["claim"] for r in rows} == {c.id for c in V.claims(name)}
    models = set(data["run"]["models"])
    for r in rows:
        assert r["chapter"] == name and r["verdict"] in V.VERDICTS, r
        assert r["model"] in models | {"all"}, r
        why = r.get("why_not") or (r["reason"] if r["verdict"] == V.NOT_MEASURABLE and r["estimate"] is None
                                   else None)
        again = V.judge(r["claim"], r["estimate"], r["ci_low"], r["ci_high"], r["n"], p=r["p"], unit=r["unit"],
                        why_not=why, interval=r["interval"])
        assert (again.label, again.reason) == (r["verdict"], r["reason"]), r
        if r["ci_low"] is not None and r["interval"] == "wilson":
            assert r["ci_low"] - 1e-12 <= r["estimate"] <= r["ci_high"] + 1e-12, r
    executed = root / "_build" / "executed" / "book" / f"{name}.ipynb"
    html = "".join(o.get("data", {}).get("text/html", "") for c in nbformat.read(executed, as_version=4).cells
                   for o in c.get("outputs", []))
    for r in rows:
        assert r["text"] in html and r["verdict"] in html, r["claim"]
    return rows
