"""kqlib.paper.strata: claim 1 on the fact (chance summary, power by k), CS2 stratified by k, pair types."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kqlib.paper import strata
from kqlib.paper.consistency import can_reach, consistency_table, cs2
from kqlib.paper.intervals import wilson_ci

from test_chance import toy_kn


def test_can_reach_and_needed_for_holds():
    assert can_reach([2, 3, 4, 10], 0.3).tolist() == [False, False, True, True]
    assert can_reach([2, 3], 0.3, "pairwise").all()
    n = 32
    need = strata.needed_for_holds(n)
    assert wilson_ci(need, n)[0] > 0.5 >= wilson_ci(need - 1, n)[0]
    assert strata.needed_for_holds(2) is None  # 2 of 2: Wilson lower bound 0.34


def test_reach_table_says_when_fewer_facts_can_reach_theta_than_holds_needs():
    # 10 facts, 2 methods; 6 facts have k = 2 (CS2 ≥ 0.5), 4 have k = 6 and CS2 = 0.2
    rows = []
    for f in range(10):
        k, v = (2, 0.6) if f < 6 else (6, 0.2)
        for m in ("ig", "sig"):
            rows.append(dict(model="m", method=m, fact_id=f, n_queries=k, cs2=v, union_size=5))
    tab = strata.reach_table(pd.DataFrame(rows), 0.3).set_index("method")
    assert tab.loc["ig", "can_reach"] == 4 and tab.loc["∩", "n_ki"] == 4 and tab.loc["∩", "n_facts"] == 10
    assert tab.loc["∩", "needed"] == strata.needed_for_holds(10) and not tab.loc["∩", "measurable"]
    from kqlib.book.chapters.ch01_kl_reexamination import reach_why_not

    why = reach_why_not(tab.assign(model="m").set_index(["model", tab.index]), "m", 0.3)
    assert "only 4 of 10 facts can fall below θ = 0.3" in why and "k ≥ 4" in why


def test_matched_k_is_the_mean_over_k0_subsets():
    sets = [{(0, 1)}, {(0, 1), (0, 2)}, {(0, 3)}, {(0, 1)}, set()]
    kn = pd.DataFrame([dict(model="m", method="ig", fact_id="f", pattern_index=i, layer=l, neuron=n)
                       for i, s in enumerate(sets) for l, n in s])
    q = pd.DataFrame([dict(fact_id="f", pattern_index=i) for i in range(5)] +
                     [dict(fact_id="g", pattern_index=i) for i in range(3)])
    out = strata.matched_k(kn, q, k0=4).set_index("fact_id")
    from itertools import combinations
    ref = np.mean([cs2([sets[i] for i in c]) for c in combinations(range(5), 4)])
    assert out.loc["f", "cs2_k4"] == pytest.approx(ref) and out.loc["f", "n_queries"] == 5
    assert math.isnan(out.loc["g", "cs2_k4"]) and out.loc["g", "n_queries"] == 3


def test_chance_summary_and_power_by_k_on_the_toy():
    null = consistency_table(toy_kn(4, 0.0, seed=1), n_null=100)
    fact = consistency_table(toy_kn(4, 0.9, seed=1), n_null=100)
    s0 = strata.chance_summary(null, n_boot=300).set_index("method").loc["all"]
    s1 = strata.chance_summary(fact, n_boot=300).set_index("method").loc["all"]
    assert s0.n_relations == 8 and s0.n_facts == 96 and s0.n_undefined == 0
    assert s0.ci_low < 0 < s0.ci_high and s1.ci_low > 0.05
    assert s0.share_ki > 0.8 and s1.share_ki < 0.1 and s1.ki_low <= s1.share_ki <= s1.ki_high
    pk = strata.power_by_k(fact)
    assert list(pk.k) == [4] and pk.facts.iloc[0] == 96 and pk.power.iloc[0] > 0.5


def test_pair_types_separate_fact_template_and_relation_overlap():
    kn = toy_kn(4, 0.9, n_rel=3, n_facts=6, seed=2)
    q = kn.drop_duplicates(["model", "method", "fact_id", "pattern_index"]).assign(correct=True)
    tab = strata.pair_types(kn, q, n_boot=200).set_index("pair_type")["mean"]
    assert tab["same fact, both answered"] > tab["other fact, same template"] > tab["same relation, other template"]
    assert tab["same relation, other template"] > tab["other relation"] >= 0
    assert math.isnan(tab["same fact, one or both not answered"])  # every query answered here


def test_matched_k_per_fact_and_within_template():
    sets = {("f", 0): {(0, 1)}, ("f", 1): {(0, 1)}, ("f", 2): {(0, 2)},
            ("g", 0): {(0, 5)}, ("g", 1): {(0, 5)}, ("g", 2): {(0, 6)}}
    kn = pd.DataFrame([dict(model="m", method="ig", relation="P1", fact_id=f, pattern_index=t, layer=l, neuron=n)
                       for (f, t), s in sets.items() for l, n in s])
    q = kn.drop_duplicates(["fact_id", "pattern_index"]).copy()
    q["correct"] = q.pattern_index < 2  # templates 0, 1 answered, 2 not, for both facts
    mk = strata.matched_k(kn, q, k0={("m", "f"): 2, ("m", "g"): 3}).set_index("fact_id")
    from itertools import combinations
    ref_f = np.mean([cs2([sets[("f", i)], sets[("f", j)]]) for i, j in combinations(range(3), 2)])
    assert mk.loc["f", "cs2_matched"] == pytest.approx(ref_f) and mk.loc["g", "cs2_matched"] == pytest.approx(
        cs2([sets[("g", i)] for i in range(3)]))
    # no template is answered for some facts and not others: nothing to contrast
    wt = strata.within_template(kn, q, n_boot=50).iloc[0]
    assert wt.templates == 0 and math.isnan(wt["diff"])
    q.loc[(q.fact_id == "g") & (q.pattern_index == 0), "correct"] = False
    wt = strata.within_template(kn, q, n_boot=50).iloc[0]
    # template 0: answered f (J with f's others: (1 + 0)/2) vs unanswered g ((1 + 0)/2): diff 0
    assert wt.templates == 1 and wt["diff"] == pytest.approx(0.0)
