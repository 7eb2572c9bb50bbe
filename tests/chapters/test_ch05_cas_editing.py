"""Chapter 05 (Editing with query localization): the claims on toy edit tables (the K_C-vs-K_I CAS gain within
relations, |E| = 1 facts out; the gain by |E|; the relation as the resampling unit of the gain claims), and the
notebook executed with the smoke profile through the `kq` command in a copy of the book (as chapter 00 in
test_book.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chapter_checks import check_claims, check_glue
from kqlib.book.chapters import ch05_cas_editing as K
from test_book import REPO, _book

NAME = "05_cas_editing"
METRICS01 = ("rel", "gen", "loc", "avg")
BOOT = dict(n_boot=500, seed=0)


def _edits(effect=0.0, n_rel=10, per=8, one_e=0, seed=0, models=("m",)):
    """Toy edits: a fact's CAS − N_i gain (Avg) is its relation's (r / n_rel) plus ``effect`` for K_I; relations
    with a high gain hold mostly K_I facts (the class is confounded with the relation). ``one_e`` extra K_C
    facts per relation have |E| = 1 (CAS = N_i: gain 0)."""
    rng = np.random.default_rng(seed)
    rows, classes = [], {}
    for model in models:
        for r in range(n_rel):
            p_i = 0.1 + 0.8 * r / (n_rel - 1)
            for f in range(per + one_e):
                fid, single = f"P{r}-{f}", f >= per
                cls = "K_C" if single or (f + 0.5) / per >= p_i else "K_I"
                gain = 0.0 if single else r / n_rel + (effect if cls == "K_I" else 0.0) + rng.normal(0, 0.02)
                classes[(model, fid)] = cls
                for task in ("erase", "update"):
                    base = 0.3 + rng.normal(0, 0.01)
                    for sel, v in (("N_i", base), ("N_g", base), ("cas", base + gain)):
                        rows.append(dict(model=model, fact_id=fid, relation=f"P{r}", selection=sel, task=task,
                                         avg=v, gen=v, n_edited_queries=1 if single else 3))
    return pd.DataFrame(rows), classes


def test_small_kc_gain_is_not_made_by_the_relation():
    edits, classes = _edits(one_e=2)
    fg = K.fact_gains(edits, classes)
    naive = fg[fg["class"] == "K_I"].gain.mean() - fg[fg["class"] == "K_C"].gain.mean()
    m = K.small_kc_claim(edits, classes, **BOOT)
    assert naive > 0.25  # pooled over relations, K_I gains far more
    assert abs(m["estimate"]) < 0.03 and m["low"] < 0 < m["high"] and m["unit"] == "relations"
    assert "20 fact(s) with |E| = 1 left out (20 K_C, 0 K_I)" in m["detail"]
    edits, classes = _edits(effect=0.1)
    m = K.small_kc_claim(edits, classes, **BOOT)
    assert abs(m["estimate"] - 0.1) < 0.03 and m["low"] > 0


def test_small_kc_gain_not_measurable_when_the_class_is_the_relation():
    edits, classes = _edits(n_rel=2, per=4)
    classes = {k: ("K_I" if edits[edits.fact_id == k[1]].relation.iloc[0] == "P1" else "K_C") for k in classes}
    m = K.small_kc_claim(edits, classes, **BOOT)
    assert "confounded" in m["why_not"] and "|E| = 1 left out" in m["why_not"]


def test_gain_by_e_marks_the_single_query_facts():
    edits, classes = _edits(one_e=1)
    t = K.gain_by_e(edits, classes, **BOOT)
    one = t[(t.n_edited == 1) & (t.group == "all")].iloc[0]
    assert one.left_out and one.facts == 10 and one.gain == 0.0
    three = t[(t.n_edited == 3) & (t.group == "all")].iloc[0]
    assert not three.left_out and three.facts == 80 and three.relations == 10


def test_fact_gains_average_the_tasks_per_fact_and_pool_models():
    edits, classes = _edits(models=("a", "b"), n_rel=3, per=2)
    fg = K.fact_gains(edits, classes, metric="avg", baseline="N_g")
    assert len(fg) == 12 and set(fg.model) == {"a", "b"}
    one = edits[(edits.model == "a") & (edits.fact_id == "P1-0")]
    want = one[one.selection == "cas"].avg.mean() - one[one.selection == "N_g"].avg.mean()
    assert np.isclose(fg[(fg.model == "a") & (fg.fact_id == "P1-0")].gain.iloc[0], want)


@pytest.fixture(scope="module")
def book05(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("book05")
    root = _book(tmp, {f"{NAME}.py": (REPO / "book" / f"{NAME}.py").read_text()})
    kq = Path(sys.executable).with_name("kq")
    proc = subprocess.run([str(kq), "run", "05", "--profile", "smoke", "--root", str(root)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"book/{NAME}.py: done" in proc.stdout
    return root


def _results(root: Path) -> dict:
    return json.loads((root / "_build" / "results" / f"{NAME}.json").read_text())


def _in01_or_nan(row: dict, key: str, why: str) -> None:
    """A rate is in [0, 1], or absent (None = NaN in JSON) for a stated reason."""
    v = row[key]
    if v is None:
        assert why, (row, key)
    else:
        assert 0.0 <= v <= 1.0 and math.isfinite(v), (row, key)


@pytest.mark.book
def test_chapter05_results(book05):
    data = _results(book05)
    nums, run = data["numbers"], data["run"]
    assert data["chapter"] == NAME
    assert run["profile"] == "smoke" and run["models"] == ["smollm2-135m"] and run["wall_time_s"] > 0
    params = run["parameters"]
    assert params["n_unrelated"] == 4 and params["method"] == "ig" and params["beta1"] == params["beta2"] == 1.0

    assert nums["n_facts_edited"] >= 1 and nums["n_edits"] >= 3 * nums["n_facts_edited"]
    assert nums["n_kc_edited"] + nums["n_ki_edited"] == nums["n_facts_edited"]
    edits = nums["edits"]
    assert len(edits) == nums["n_edits"]
    assert {e["selection"] for e in edits} == {"cas", "N_i", "N_g"}
    assert {e["task"] for e in edits} <= {"erase", "update"} and any(e["task"] == "erase" for e in edits)
    for e in edits:
        for k in METRICS01:  # every edit has edited, held-out and unrelated queries: no NaN here
            assert e[k] is not None and 0.0 <= e[k] <= 1.0, (e, k)
        # ΔPPL is finite, or absent for an update whose perplexity overflowed (exp(NLL) > 1e308)
        assert (e["dppl"] is not None and math.isfinite(e["dppl"])) or e["task"] == "update", e
        assert e["n_edited_queries"] >= 1 and e["n_heldout_queries"] == params["n_heldout"]
        assert e["n_unrelated"] <= params["n_unrelated"] and e["n_neurons"] >= 0
        assert not set(e["edited_patterns"]) & set(e["heldout_patterns"])
    # N_g ⊇ N_i
    size = {(e["fact_id"], e["selection"]): e["n_neurons"] for e in edits if e["task"] == "erase"}
    for (fact, sel), n in size.items():
        if sel == "N_g":
            assert n >= size[(fact, "N_i")]

    # Table 3: rates in [0, 1] or NaN for an empty group; CIs ordered
    t3 = nums["table3"]
    assert {r["group"] for r in t3} == {"all", "K_C", "K_I"}
    for r in t3:
        why = "empty group" if r["facts"] == 0 else ""
        for k in METRICS01:
            _in01_or_nan(r, k, why)
            if r[k] is not None:
                assert r[f"{k}_low"] - 1e-12 <= r[k] <= r[f"{k}_high"] + 1e-12, (r, k)
                assert 0.0 <= r[f"{k}_low"] <= r[f"{k}_high"] <= 1.0
        if r["group"] == "all":
            assert r["facts"] >= 1
    for g in nums["gains"]:
        if g["gain"] is None:
            assert g["facts"] == 0
        else:
            assert -1.0 <= g["gain"] <= 1.0 and g["gain_low"] - 1e-12 <= g["gain"] <= g["gain_high"] + 1e-12
    for key in ("gain_N_i", "gain_N_g"):
        assert nums[key] is not None and nums[f"{key}_low"] <= nums[key] <= nums[f"{key}_high"]
    # β ablation: one row per β2 of the grid and task
    betas = {r["beta2"] for r in nums["beta_ablation"]}
    assert betas == {float(b) for b in params["beta2_grid"]}
    for r in nums["beta_ablation"]:
        _in01_or_nan(r, "avg", "")
    assert nums["best_beta2"] in betas

    for name in nums["figures"].values():
        path = book05 / "_build" / "figures" / name
        assert path.exists() and path.stat().st_size > 5000, path


@pytest.mark.book
def test_chapter05_claims_and_pooled_unit(book05):
    rows = check_claims(book05, NAME)
    nums = _results(book05)["numbers"]
    facts = {(e["model"], e["fact_id"]) for e in nums["edits"]}
    # the pooled gains count each fact once (erase and update averaged per fact)
    pooled = [g for g in nums["gains"] if g["model"] == "all" and g["task"] == "both" and g["group"] == "all"]
    assert pooled and all(g["facts"] <= len(facts) for g in pooled)
    ni = next(r for r in rows if r["claim"] == "cas_vs_ni")
    assert ni["n"] <= nums["gain_N_i_pairs"] <= len(facts)
    # the fact is the unit only with fewer than 8 relations, and the row says so
    assert ni["unit"] == "relations" or (ni["n"] == nums["gain_N_i_pairs"] and "fewer than 8" in ni["this_run"])
    # the K_C-vs-K_I gain: within relations, |E| = 1 facts left out and counted
    small = next(r for r in rows if r["claim"] == "cas_gain_small_kc")
    assert "|E| = 1 left out" in (small["this_run"] + (small["why_not"] or ""))
    by_e = nums["gain_by_e"]
    assert {r["left_out"] for r in by_e if r["n_edited"] == 1} <= {True}
    assert sum(r["facts"] for r in by_e if r["group"] == "all") == nums["gain_N_i_pairs"]
    llama = next(r for r in rows if r["claim"] == "cas_llama3_erasure")
    assert llama["verdict"] == "not measurable here"


@pytest.mark.book
def test_chapter05_glue_equals_json(book05):
    nb = check_glue(book05, NAME)
    text = json.dumps(nb)
    assert "IProgress" not in text and "Traceback" not in text
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 3
