"""Chapters 03 (Query-KN mapping) and 04 (dynamic KN selection), executed with the smoke profile.

Both run through the `kq` command in a copy of the book (as chapter 00 in test_book.py). They reuse the
attributions of chapter 01 through the on-disk cache when it ran before with the same profile; from an empty
cache they compute the IG attributions they need themselves.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from chapter_checks import check_claims, check_figures, check_glue
from kqlib.paper.mapping import CONDITIONS
from test_book import REPO, _book

CHAPTERS = {"03": "03_query_kn_mapping", "04": "04_dynamic_kn_selection"}


@pytest.fixture(scope="module")
def book34(tmp_path_factory):
    """Chapters 03 and 04 executed with the smoke profile (one `kq run` each), in a copy of the book."""
    tmp = tmp_path_factory.mktemp("book34")
    root = _book(tmp, {f"{name}.py": (REPO / "book" / f"{name}.py").read_text() for name in CHAPTERS.values()})
    kq = Path(sys.executable).with_name("kq")
    for prefix, name in CHAPTERS.items():
        proc = subprocess.run([str(kq), "run", prefix, "--profile", "smoke", "--root", str(root)],
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert f"book/{name}.py: done" in proc.stdout
        assert "Unable to parse" not in proc.stdout + proc.stderr  # papermill reads every parameter line
    return root


def _results(root: Path, name: str) -> dict:
    return json.loads((root / "_build" / "results" / f"{name}.json").read_text())


def _finite_or_explained(nums: dict, key: str) -> None:
    """A headline number is finite, or None with a reason in ``notes``."""
    value = nums[key]
    if value is None:
        assert key in nums["notes"] and nums["notes"][key], key
    else:
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)


def _check_ci_rows(rows: list[dict], value: str = "mean") -> None:
    assert rows
    for r in rows:
        assert r["n"] <= r["n_rows"], r  # the unit of the interval is the fact, not the query
        if r["n"] == 0:
            assert r[value] is None and r["ci_low"] is None and r["ci_high"] is None, r
            continue
        assert r[value] is not None and math.isfinite(r[value]), r
        assert r["ci_low"] - 1e-9 <= r[value] <= r["ci_high"] + 1e-9, r


def _check_tests(rows: list[dict], facts_per_group: dict) -> None:
    assert rows
    for r in rows:
        assert (r["p"] is not None and 0.0 <= r["p"] <= 1.0) or r["note"], r
        # paired over facts: at most as many pairs as the group has facts
        assert r["unit"] == "fact" and r["n"] <= facts_per_group[r.get("group")], r
        if r["diff"] is not None:
            assert r["diff"] == pytest.approx(r["mean_a"] - r["mean_b"]), r
    assert any(r["p"] is not None for r in rows), "no paired test is defined at all"


@pytest.mark.book
def test_chapter03_results(book34):
    data = _results(book34, "03_query_kn_mapping")
    nums, run = data["numbers"], data["run"]
    assert run["profile"] == "smoke" and run["models"] == ["smollm2-135m"] and run["wall_time_s"] > 0
    assert run["parameters"]["enhance_factor"] == 2.0 and run["parameters"]["threshold_kind"] == "static"
    assert nums["n_queries"] >= 2 and nums["n_interventions"] == nums["n_queries"] * len(CONDITIONS) * 2
    assert nums["n_queries_kc"] + nums["n_queries_ki"] == nums["n_queries"]
    for g in ("kc", "ki"):
        for cond in ("own", "union", "intersection", "random"):
            for op in ("avg", "sup", "enh"):
                _finite_or_explained(nums, f"{op}_{cond}_{g}")
            avg = nums[f"avg_{cond}_{g}"]
            if avg is not None:
                assert avg >= 0  # a mean of absolute values
                lo, hi = nums[f"avg_{cond}_{g}_ci"]
                assert lo - 1e-9 <= avg <= hi + 1e-9
            sup = nums[f"sup_{cond}_{g}"]
            assert sup is None or sup >= -1.0 - 1e-9  # a probability cannot drop by more than 100 %
        for b in ("union", "intersection", "random"):
            key = f"p_own_vs_{b}_{g}"
            assert (nums[key] is not None and 0.0 <= nums[key] <= 1.0) or nums["notes"].get(key), key
    _check_ci_rows(nums["summary"])
    ops = {r["operation"] for r in nums["summary"]}
    assert ops == {"suppress", "enhance", "average"}
    for r in nums["summary"]:
        if r["operation"] == "average" and r["mean"] is not None:
            assert r["mean"] >= 0
    facts = {}
    for r in nums["summary"]:
        facts[r["group"]] = max(facts.get(r["group"], 0), r["n"])
    _check_tests(nums["tests"], facts)
    # the random control has exactly as many neurons as the own set
    sizes = {(r["group"], r["condition"]): r["mean_neurons"] for r in nums["set_sizes"]}
    for g in ("K_C", "K_I"):
        if (g, "own") in sizes:
            assert sizes[(g, "own")] == pytest.approx(sizes[(g, "random")])
    # the claims' contrasts: own − ∩ only on queries with a non-empty ∩, in the unit the claims resample
    con = {(r["group"], r["comparison"]): r for r in nums["contrasts"]}
    for g in ("K_C", "K_I"):
        if (g, "own − ∩") in con:
            fair, naive = con[(g, "own − ∩")], con[(g, "own − ∩ (all queries)")]
            assert fair["queries"] <= naive["queries"] and fair["unit"] in ("facts", "relations")
            if fair["estimate"] is not None:
                assert fair["low"] - 1e-9 <= fair["estimate"] <= fair["high"] + 1e-9
    check_figures(book34, nums["figures"])


@pytest.mark.book
def test_chapter04_results(book34):
    data = _results(book34, "04_dynamic_kn_selection")
    nums, run = data["numbers"], data["run"]
    assert run["profile"] == "smoke" and run["parameters"]["alphas"] == [0.0, 2.0]
    assert 1 <= nums["n_queries"] <= run["parameters"]["n_queries"]
    assert nums["synapses_per_query"] > 0 and nums["kns_per_query"] > 0
    for tag in ("sup", "enh"):
        for m in ("act", "prob"):
            for s in ("syn", "ctrl"):
                key = f"{m}_{s}_{tag}"
                _finite_or_explained(nums, key)
                if nums[key] is not None:
                    lo, hi = nums[f"{key}_ci"]
                    assert lo - 1e-9 <= nums[key] <= hi + 1e-9
            key = f"p_{m}_{tag}"
            assert (nums[key] is not None and 0.0 <= nums[key] <= 1.0) or nums["notes"].get(key), key
    # suppression (α = 0) can at most remove the answer's probability (ΔAct may pass −1: sign changes)
    for key in ("prob_syn_sup", "prob_ctrl_sup"):
        assert nums[key] is None or nums[key] >= -1.0 - 1e-9
    _check_ci_rows(nums["summary"])
    _check_tests(nums["tests"], {None: nums["n_facts"]})
    assert {r["set"] for r in nums["summary"]} == {"synapse", "control", "matched"}
    # the mass-matched control scales about as much attention as the synapses, far more than the random one
    if nums["mass_syn"] and nums["mass_matched"] is not None:
        assert nums["mass_matched"] > nums["mass_ctrl"] and nums["mass_matched"] <= nums["mass_syn"] * 1.5
    # the claims compare the size of the effects, the quantity the test compares
    by = {(r["alpha"], r["measure"]): r for r in nums["tests"]}
    assert {m for _, m in by} == {"abs_d_act", "abs_d_prob"}
    heat = nums["heat_query"]
    assert heat is not None and heat["n_kns"] >= 1 and heat["n_synapses"] >= 1
    assert heat["d_act"] == pytest.approx(nums["heat_d_act"]) and heat["prompt"] == nums["heat_prompt"]
    assert "heatmap" in nums["figures"] and "distributions" in nums["figures"]
    check_figures(book34, nums["figures"])


@pytest.mark.book
@pytest.mark.parametrize("name", list(CHAPTERS.values()))
def test_glue_equals_json(book34, name):
    check_glue(book34, name)


@pytest.mark.book
@pytest.mark.parametrize("name", list(CHAPTERS.values()))
def test_claims_judged_by_the_one_rule(book34, name):
    rows = check_claims(book34, name)
    for r in rows:
        if r["estimate"] is not None and r["verdict"] != "not measurable here":
            assert r["unit"] in ("facts", "relations") and r["n"] >= 1, r
            # the fact stays the unit only with fewer than 8 relations, and the row says so
            assert r["unit"] == "relations" or "fewer than 8" in r["this_run"], r
