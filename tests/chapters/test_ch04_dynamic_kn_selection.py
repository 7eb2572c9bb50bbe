"""Chapter 04 (dynamic KN selection): the claim measurement on a toy (per-fact means of the queries, then the
relation as the unit of the interval with >= 8 relations, so a relation-level null is not read as an effect, else
the fact), the clear stop when no query is chosen, and the notebook executed with the smoke profile (fixture
``book34``: chapters 03 and 04 in one copy of the book)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chapter_checks import (check_ci_rows, check_claim_units, check_claims, check_figures, check_glue,
                            check_paired_tests, finite_or_explained, results)
from kqlib.book.chapters import ch04_dynamic_kn_selection as K
from kqlib.errors import TooFewFacts

NAME = "04_dynamic_kn_selection"
BOOT = dict(n_boot=400, seed=0)


def _syn(n_rel, per=6, queries=3, effect=0.0, seed=0):
    """|ΔAct| of the synapse set minus the control's: a relation effect N(0, 0.3²) shared by its facts (mean 0
    over relations) plus ``effect``; the queries of a fact repeat its value with small noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_rel):
        rel_eff = rng.normal(0, 0.3)
        for f in range(per):
            for q in range(queries):
                for s, v in (("synapse", 1.0 + rel_eff + effect + rng.normal(0, 0.01)), ("control", 1.0)):
                    rows.append(dict(model="m", relation=f"P{r}", fact_id=f"P{r}-{f}", pattern_index=q,
                                     alpha=0.0, set=s, abs_d_act=v))
    return pd.DataFrame(rows)


def test_paired_claim_resamples_relations_and_averages_queries_per_fact():
    syn = _syn(12)
    m = K.paired_claim(syn, "m", 0.0, "abs_d_act", "control", **BOOT)
    assert m["unit"] == "relations" and m["n"] == 12 and m["low"] < m["estimate"] < m["high"]
    per_fact = syn[syn["set"] == "synapse"].groupby("fact_id").abs_d_act.mean() - 1.0
    assert np.isclose(m["estimate"], per_fact.mean())
    assert m["mean_b"] == 1.0 and m["p"] is not None
    few = K.paired_claim(_syn(3), "m", 0.0, "abs_d_act", "control", **BOOT)
    assert few["unit"] == "facts" and few["n"] == 18 and "fewer than 8" in few["detail"]
    assert K.paired_claim(syn, "m", 2.0, "abs_d_act", "control", **BOOT) is None


def test_a_relation_level_null_is_rarely_an_effect_but_a_shift_is():
    hits = 0
    for s in range(30):
        m = K.paired_claim(_syn(12, seed=s), "m", 0.0, "abs_d_act", "control", n_boot=200, seed=s)
        hits += m["low"] > 0 or m["high"] < 0
    assert hits <= 7  # 30 nulls: 4 excluded 0 here; the fact-level interval excluded it in 19 of them
    m = K.paired_claim(_syn(12, effect=0.5), "m", 0.0, "abs_d_act", "control", **BOOT)
    assert m["low"] > 0


def test_synapses_stop_when_no_query_is_chosen():
    """No chosen query: kqlib's stop at the helper, not an AttributeError on an empty frame further down."""
    from types import SimpleNamespace

    with pytest.raises(TooFewFacts, match="no synapses to scale"):
        K.run_chapter_synapses([SimpleNamespace(name="m")], {"m": []}, {"m": []}, {"m": []}, kn_method="ig",
                               t_threshold=0.2, synapse_t=0.2, alphas=[0.0], steps=4, site="post",
                               renormalize=False, mass_matched=False, seed=0)


@pytest.mark.book
def test_chapter04_results(book34):
    data = results(book34, NAME)
    nums, run = data["numbers"], data["run"]
    assert run["profile"] == "smoke" and run["parameters"]["alphas"] == [0.0, 2.0]
    assert 1 <= nums["n_queries"] <= run["parameters"]["n_queries"]
    assert nums["synapses_per_query"] > 0 and nums["kns_per_query"] > 0
    for tag in ("sup", "enh"):
        for m in ("act", "prob"):
            for s in ("syn", "ctrl"):
                key = f"{m}_{s}_{tag}"
                finite_or_explained(nums, key)
                if nums[key] is not None:
                    lo, hi = nums[f"{key}_ci"]
                    assert lo - 1e-9 <= nums[key] <= hi + 1e-9
            key = f"p_{m}_{tag}"
            assert (nums[key] is not None and 0.0 <= nums[key] <= 1.0) or nums["notes"].get(key), key
    # suppression (α = 0) can at most remove the answer's probability (ΔAct may pass −1: sign changes)
    for key in ("prob_syn_sup", "prob_ctrl_sup"):
        assert nums[key] is None or nums[key] >= -1.0 - 1e-9
    check_ci_rows(nums["summary"])
    check_paired_tests(nums["tests"], {None: nums["n_facts"]})
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
def test_glue_equals_json(book34):
    check_glue(book34, NAME)


@pytest.mark.book
def test_claims_judged_by_the_one_rule(book34):
    rows = check_claims(book34, NAME)
    check_claim_units(rows)
