"""Chapter 03 (the query-KN mapping): the claim table on a toy mapping, where own vs ∩ is judged on queries with a
non-empty ∩ (beside a random subset of the union as large as ∩), so empty intersections (ΔProb = 0) cannot win
it; the clear stop when nothing qualifies; and the notebook executed with the smoke profile (fixture ``book34``:
chapters 03 and 04 in one copy of the book)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chapter_checks import (check_ci_rows, check_claim_units, check_claims, check_figures, check_glue,
                            check_paired_tests, finite_or_explained, results)
from kqlib.book.chapters import ch03_query_kn_mapping as K
from kqlib.errors import TooFewFacts
from kqlib.paper.mapping import CONDITIONS, per_fact_effects

NAME = "03_query_kn_mapping"
BOOT = dict(n_boot=500, seed=0)


def _mapping(n_rel=10, facts=2, queries=3, empty_share=2 / 3, seed=0):
    """K_I queries: own moves the answer by ~0.5; ∩ is empty (a no-op) for ``empty_share`` of the queries and
    otherwise moves it exactly as much as own; the size-matched union subset by ~0.1."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_rel):
        for f in range(facts):
            for q in range(queries):
                empty = (q + 0.5) / queries < empty_share
                effects = {"own": 0.5, "union": 0.6, "intersection": 0.0 if empty else 0.5,
                           "union_matched": 0.0 if empty else 0.1, "random": 0.05}
                for cond, eff in effects.items():
                    for op, sign in (("suppress", -1), ("enhance", 1)):
                        noisy = 0.0 if eff == 0 else eff + rng.normal(0, 0.02)
                        rows.append(dict(model="m", method="ig", relation=f"P{r}", fact_id=f"P{r}-{f}",
                                         pattern_index=q, group="K_I", condition=cond, operation=op,
                                         n_neurons=0 if eff == 0 else 3, p_before=0.5, p_after=0.5,
                                         d_prob=sign * noisy, flipped=False))
    return pd.DataFrame(rows)


def test_own_vs_intersection_is_not_won_by_empty_intersections():
    mapping = _mapping()
    c = K.claim_contrasts(K.with_avg(mapping), mapping, **BOOT).set_index("comparison")
    naive, fair = c.loc["own − ∩ (all queries)"], c.loc["own − ∩"]
    assert naive.estimate > 0.25 and naive.low > 0  # counting the no-ops, own "beats" ∩
    assert abs(fair.estimate) < 0.03 and fair.low < 0 < fair.high  # where ∩ exists, it does as much
    assert fair.queries == 20 and naive.queries == 60 and fair.unit == "relations" and fair.n == 10
    matched = c.loc["∩ − size-matched union subset"]
    assert matched.estimate > 0.3 and matched.low > 0 and matched.p < 0.05


def test_per_fact_effects_drop_queries_with_an_empty_intersection_and_keep_the_fact_as_unit():
    mapping = _mapping(n_rel=3, empty_share=0.5)
    long = K.with_avg(mapping)
    all_q = per_fact_effects(long, mapping)
    ne = per_fact_effects(long, mapping, nonempty_intersection=True)
    assert set(all_q.queries) == {3} and set(ne.queries) == {2}
    assert len(all_q) == len(ne) == 6 and set(ne.relation) == {"P0", "P1", "P2"}
    c = K.claim_contrasts(long, mapping, **BOOT)
    assert set(c.unit) == {"facts"} and all("fewer than 8" in d for d in c.detail)


def test_mapping_stops_when_no_query_qualifies():
    """No K_C / K_I query to intervene on: kqlib's stop at the helper, not a KeyError on an empty frame further
    down."""
    cs = pd.DataFrame({"model": ["m", "m"], "method": ["ig", "ig"], "fact_id": ["a", "b"],
                       "group": ["K_none", "K_none"]})
    with pytest.raises(TooFewFacts, match="K_none: 2"):
        K.run_chapter_mapping([], None, cs, methods=["ig"], max_queries=0, enhance_factor=2.0, site="post", seed=0)


@pytest.mark.book
def test_chapter03_results(book34):
    data = results(book34, NAME)
    nums, run = data["numbers"], data["run"]
    assert run["profile"] == "smoke" and run["models"] == ["smollm2-135m"] and run["wall_time_s"] > 0
    assert run["parameters"]["enhance_factor"] == 2.0 and run["parameters"]["threshold_kind"] == "static"
    assert nums["n_queries"] >= 2 and nums["n_interventions"] == nums["n_queries"] * len(CONDITIONS) * 2
    assert nums["n_queries_kc"] + nums["n_queries_ki"] == nums["n_queries"]
    for g in ("kc", "ki"):
        for cond in ("own", "union", "intersection", "random"):
            for op in ("avg", "sup", "enh"):
                finite_or_explained(nums, f"{op}_{cond}_{g}")
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
    check_ci_rows(nums["summary"])
    ops = {r["operation"] for r in nums["summary"]}
    assert ops == {"suppress", "enhance", "average"}
    for r in nums["summary"]:
        if r["operation"] == "average" and r["mean"] is not None:
            assert r["mean"] >= 0
    facts = {}
    for r in nums["summary"]:
        facts[r["group"]] = max(facts.get(r["group"], 0), r["n"])
    check_paired_tests(nums["tests"], facts)
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
def test_glue_equals_json(book34):
    check_glue(book34, NAME)


@pytest.mark.book
def test_claims_judged_by_the_one_rule(book34):
    rows = check_claims(book34, NAME)
    check_claim_units(rows)
