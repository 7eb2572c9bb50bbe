"""Checks shared by the chapter tests: the results JSON, saved figures, glued numbers == JSON, claim rows, and the
row checks two chapters share (K_I shares, intervals over facts, paired tests)."""

from __future__ import annotations

import json
import math
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


def check_claim_units(rows: list[dict]) -> None:
    """Every measured row names its resampling unit: relations with >= 8 relations, else facts and says so."""
    for r in rows:
        if r["estimate"] is not None and r["verdict"] != "not measurable here":
            assert r["unit"] in ("facts", "relations") and r["n"] >= 1, r
            # the fact stays the unit only with fewer than 8 relations, and the row says so
            assert r["unit"] == "relations" or "fewer than 8" in r["this_run"], r


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


def check_share_rows(rows: list[dict]) -> None:
    """K_I share rows (chapters 01, 02): shares in [0, 1], K_none apart, the static θ's Wilson interval."""
    from kqlib.paper.stats import wilson_ci

    assert rows
    for r in rows:
        share = r["share_ki"]
        if share is None:  # only a method with no facts at all
            assert r["n_facts"] == 0, r
            continue
        assert 0.0 <= share <= 1.0, r
        assert r["n_none"] >= 0 and r["n_ki"] <= r["n_facts"], r  # K_none facts are not K_I facts
        if r["ci_low"] is not None and r["ci_high"] is not None:
            assert 0.0 <= r["ci_low"] <= r["ci_high"] <= 1.0, r
        if r["threshold_kind"] == "static":
            # Wilson interval of n_ki / n_facts: contains the share, never collapses to a point
            assert r["ci_method"] == "Wilson"
            assert (r["ci_low"], r["ci_high"]) == pytest.approx(wilson_ci(r["n_ki"], r["n_facts"]))
            assert r["ci_low"] - 1e-12 <= share <= r["ci_high"] + 1e-12 and r["ci_high"] > r["ci_low"], r
        else:
            assert r["ci_method"].startswith("bootstrap"), r


def finite_or_explained(nums: dict, key: str) -> None:
    """A headline number is finite, or None with a reason in ``notes``."""
    value = nums[key]
    if value is None:
        assert key in nums["notes"] and nums["notes"][key], key
    else:
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)


def check_ci_rows(rows: list[dict], value: str = "mean") -> None:
    """Mean rows with a cluster-bootstrap interval over facts (chapters 03, 04)."""
    assert rows
    for r in rows:
        assert r["n"] <= r["n_rows"], r  # the unit of the interval is the fact, not the query
        if r["n"] == 0:
            assert r[value] is None and r["ci_low"] is None and r["ci_high"] is None, r
            continue
        assert r[value] is not None and math.isfinite(r[value]), r
        assert r["ci_low"] - 1e-9 <= r[value] <= r["ci_high"] + 1e-9, r


def check_paired_tests(rows: list[dict], facts_per_group: dict) -> None:
    """Paired tests over facts (chapters 03, 04): a p-value or a note, at most as many pairs as facts."""
    assert rows
    for r in rows:
        assert (r["p"] is not None and 0.0 <= r["p"] <= 1.0) or r["note"], r
        # paired over facts: at most as many pairs as the group has facts
        assert r["unit"] == "fact" and r["n"] <= facts_per_group[r.get("group")], r
        if r["diff"] is not None:
            assert r["diff"] == pytest.approx(r["mean_a"] - r["mean_b"]), r
    assert any(r["p"] is not None for r in rows), "no paired test is defined at all"
