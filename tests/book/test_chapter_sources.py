"""Static checks of the chapter sources (no execution): thin notebooks, honest parameter defaults, claims."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

from kqlib.book.claims import verdicts as V
from kqlib.book.profiles import declared_parameters, load_profile, parameters_for

REPO = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((REPO / "book").glob("[0-9][0-9]_*.py"))


def _code_share(path: Path) -> float:
    """Code lines / (code + markdown lines), as /work/shared/tools/chapter_code_share.py counts them."""
    kind, code, md = None, 0, 0
    for ln in path.read_text().splitlines():
        if ln.startswith("# %%"):
            kind = "md" if "[markdown]" in ln else "code"
            continue
        if kind is None or not ln.strip() or ln.strip() == "#":
            continue
        code, md = (code + 1, md) if kind == "code" else (code, md + 1)
    return code / max(code + md, 1)


def test_there_are_chapters():
    assert len(CHAPTERS) >= 7 and CHAPTERS[-1].name == "99_scorecard.py"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_thin_and_defines_no_functions(path):
    assert _code_share(path) <= 0.45, f"{path.name}: {_code_share(path):.0%} code lines"
    nb = jupytext.read(path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                               ast.ClassDef))]
            assert not [d for d in defs if not isinstance(d, ast.Lambda)], (path.name, cell.source[:80])
            # no verdict logic in notebooks: verdict words are produced by kqlib.book.claims.verdicts only
            assert not re.search(r"[\"'](holds|differs|inconclusive|reproduced|not reproduced)[\"']", cell.source)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_parameter_defaults_are_the_smoke_profile(path):
    """The parameters cell says what the smoke profile really runs: every value the profile passes equals
    the declared default (so `profile = "smoke"` is not a label beside values of another profile)."""
    declared = declared_parameters(path)
    assert declared.get("profile") == "smoke"
    passed = parameters_for(path, load_profile("smoke"), {})
    for key, value in passed.items():
        assert declared[key] == value, (path.name, key, declared[key], value)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_papermill_parses_every_parameter(path):
    from papermill.translators import PythonTranslator

    nb = jupytext.read(path)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    parsed = {p.name for p in PythonTranslator.inspect(cell)}
    assert parsed == set(declared_parameters(path)), set(declared_parameters(path)) ^ parsed


def test_every_claim_belongs_to_a_chapter_that_judges_it():
    names = {p.stem for p in CHAPTERS}
    for c in V.claims():
        assert c.chapter in names, c.id
        source = (REPO / "book" / f"{c.chapter}.py").read_text()
        assert "ch.paper_vs_run()" in source, c.chapter


def test_toc_lists_the_scorecard_after_the_intro_and_its_data_notebook_last():
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    first = toc["parts"][0]["chapters"][0]["file"]
    assert toc["root"] == "book/intro" and first == "book/scorecard"
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    notebooks = [f for f in files if (REPO / f"{f}.py").exists()]
    assert notebooks[-1] == "book/99_scorecard"
    from kqlib.book.claims.scorecard import TABLE_FILE

    assert f":file: {TABLE_FILE}" in (REPO / "book" / "scorecard.md").read_text()


def test_claims_file_is_packaged():
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["kqlib"]
    assert any(Path("claims.toml").match(p) for p in patterns)


def test_sources_have_no_control_characters():
    """No control character but tab and newline in the book's and kqlib's text: a Python string that wrote
    "\\alpha" unescaped leaves a BEL (\\x07) before "lpha", which MathJax cannot typeset (it failed a page once)."""
    files = [*(REPO / "book").rglob("*.py"), *(REPO / "book").rglob("*.md"), *(REPO / "kqlib").rglob("*.py"),
             *(REPO / "kqlib").rglob("*.toml"), REPO / "README.md", REPO / "_config.yml", REPO / "_toc.yml"]
    bad = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found = sorted({f"\\x{ord(c):02x}" for c in line if ord(c) < 32 and c != "\t" or ord(c) == 127})
            if found:
                bad.append(f"{path.relative_to(REPO)}:{n}: {' '.join(found)}")
    assert not bad, "control characters (write them escaped, e.g. '\\\\alpha'):\n" + "\n".join(bad)
