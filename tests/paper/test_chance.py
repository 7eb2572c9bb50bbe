"""The chance-corrected consistency (kqlib.paper.chance) on toys where the naive and the right reading disagree.

Toy: KN sets of 8 relations × 12 facts drawn from a null with relation-hub and template-hub neurons (what two
phrasings of *different* facts of one relation share), at k = 2..10 phrasings per fact. CS2's K_I share at
θ = 0.3 moves with k although nothing about the facts changes; mean delta_j stays at 0. A fact-specific
process (a core of neurons of the fact's own, kept on each phrasing) gives delta_j > 0 at every k.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kqlib.errors import ParameterError
from kqlib.paper import chance
from kqlib.paper.consistency import classify, consistency_table, cs2, mean_pairwise_jaccard
from kqlib.paper.stats import two_level_bootstrap_ci

N_NEURONS = 46_080


def toy_kn(k: int, fact_core: float = 0.0, n_rel: int = 8, n_facts: int = 12, seed: int = 0) -> pd.DataFrame:
    """Tidy KN frame: every fact asked with k of its relation's k + 2 templates (a random k-subset per fact).
    Each query's set: relation hub (40 neurons, each kept w.p. 0.35), template hub (20, w.p. 0.5), 10 noise
    neurons, and, when ``fact_core`` > 0, the fact's own 10-neuron core, each kept w.p. ``fact_core``."""
    rng = np.random.default_rng(seed)
    n_templates = k + 2
    rows = []
    for r in range(n_rel):
        rel_hub = rng.choice(N_NEURONS, 40, replace=False)
        t_hubs = [rng.choice(N_NEURONS, 20, replace=False) for _ in range(n_templates)]
        for f in range(n_facts):
            core = rng.choice(N_NEURONS, 10, replace=False)
            for t in sorted(rng.choice(n_templates, k, replace=False)):
                s = set(rel_hub[rng.random(40) < 0.35]) | set(t_hubs[t][rng.random(20) < 0.5])
                s |= set(rng.choice(N_NEURONS, 10, replace=False))
                if fact_core:
                    s |= set(core[rng.random(10) < fact_core])
                for n in s:
                    rows.append(("m", "ig", f"P{r}", f"P{r}_{f}", int(t), int(n) // 4096, int(n) % 4096))
    return pd.DataFrame(rows, columns=["model", "method", "relation", "fact_id", "pattern_index", "layer", "neuron"])


def _summary(k: int, fact_core: float) -> dict:
    cs = consistency_table(toy_kn(k, fact_core, seed=k), n_null=200, seed=0)
    assert cs.delta_j.notna().all(), cs.null_reason.unique()
    return dict(ki_cs2=float(classify(cs.cs2, 0.3).mean()), mean_delta=float(cs.delta_j.mean()),
                lo_hi=two_level_bootstrap_ci(cs.delta_j, cs.relation, n_boot=500, seed=0),
                sig=float((cs.p_null < 0.05).mean()))


@pytest.mark.parametrize("k", [2, 3, 4, 6, 8, 10])
def test_null_with_hub_neurons_gives_delta_j_zero_at_every_k(k):
    s = _summary(k, 0.0)
    assert abs(s["mean_delta"]) < 0.02, s
    lo, hi = s["lo_hi"]
    assert lo < 0.0 < hi or abs(s["mean_delta"]) < 0.01, s  # the interval covers the null (or all but)
    assert s["sig"] < 0.15, s  # about α of the facts reject under the null


@pytest.mark.parametrize("k", [2, 3, 4, 6, 8, 10])
def test_fact_specific_process_gives_delta_j_above_zero_at_every_k(k):
    s = _summary(k, 0.9)
    assert s["mean_delta"] > 0.05 and s["lo_hi"][0] > 0.0, s


def test_cs2_share_moves_with_k_under_the_null_while_delta_j_does_not():
    lo_k, hi_k = _summary(3, 0.0), _summary(10, 0.0)
    assert lo_k["ki_cs2"] == 0.0  # CS2 ≥ 1/3 > 0.3: no fact can be K_I at k = 3
    assert hi_k["ki_cs2"] > 0.8  # the same process at k = 10: almost all "K_I"
    assert abs(lo_k["mean_delta"] - hi_k["mean_delta"]) < 0.03


def test_chance_table_matches_a_direct_computation():
    """Three facts of one relation on templates 0..2 (fact c lacks template 2): hand-checked numbers."""
    A, B, C = {(0, 1), (0, 2)}, {(0, 2), (0, 3)}, {(1, 1)}
    sets = {("m", "ig", "a", 0): A, ("m", "ig", "a", 1): B, ("m", "ig", "a", 2): C,
            ("m", "ig", "b", 0): B, ("m", "ig", "b", 1): A, ("m", "ig", "b", 2): set(),
            ("m", "ig", "c", 0): C, ("m", "ig", "c", 1): C,
            ("m", "ig", "d", 0): A, ("m", "ig", "d", 1): C, ("m", "ig", "d", 2): B}
    q = pd.DataFrame([dict(model=k[0], method=k[1], relation="P1", fact_id=k[2], pattern_index=k[3]) for k in sets])
    out = chance.chance_table(q, sets, n_draws=400, seed=1).set_index("fact_id")
    # fact c: templates 0, 1; pseudo-facts pair (g0, g1) with g0 ≠ g1 from {a, b, d}: 6 equally likely
    # fillings, J(N_g0,0, N_g1,1) over them; observed J(C, C) = 1
    fill = {"a": (A, B), "b": (B, A), "d": (A, C)}
    js = [mean_pairwise_jaccard([fill[g][0], fill[h][1]]) for g in fill for h in fill if g != h]
    r = out.loc["c"]
    assert r.k_null == 2 and r.n_null_facts == 3 and r.j_obs == pytest.approx(1.0)
    assert r.j_null == pytest.approx(np.mean(js), abs=0.05)  # 400 draws of 6 equally likely values
    assert r.p_null == pytest.approx(np.mean(np.array(js) >= 1.0), abs=0.07)  # 3 of the 6 fillings reach J = 1
    assert r.delta_j == pytest.approx(r.j_obs - r.j_null)
    # fact a: templates 0, 1, 2; its observed statistic is the mean pairwise Jaccard of its three sets
    assert out.loc["a", "j_obs"] == pytest.approx(mean_pairwise_jaccard([A, B, C]))


def test_too_few_facts_sharing_the_templates_gives_nan_with_a_reason():
    sets = {("m", "ig", f, t): {(0, t)} for f in ("a", "b") for t in (0, 1)}
    sets[("m", "ig", "c", 5)] = {(0, 9)}
    sets[("m", "ig", "c", 6)] = {(0, 9)}
    q = pd.DataFrame([dict(model="m", method="ig", relation="P1", fact_id=k[2], pattern_index=k[3]) for k in sets])
    out = chance.chance_table(q, sets).set_index("fact_id")
    assert math.isnan(out.loc["a", "delta_j"]) and "1 other fact(s)" in out.loc["a", "null_reason"]
    assert math.isnan(out.loc["c", "p_null"]) and "fewer than 2 of its 2 template(s)" in out.loc["c", "null_reason"]
    with pytest.raises(ParameterError, match="lacks column"):
        chance.chance_table(q.drop(columns="relation"), sets)


def test_consistency_table_has_the_chance_columns_and_seeding_is_per_fact():
    kn = toy_kn(4, 0.5, n_rel=2, n_facts=5, seed=3)
    cs = consistency_table(kn, n_null=50, seed=2)
    for col in ("delta_j", "p_null", "null_reason"):
        assert col in cs.columns
    assert ((cs.p_null > 0) & (cs.p_null <= 1)).all()
    # the same fact's values do not depend on the other relation being present
    one = consistency_table(kn[kn.relation == "P1"], n_null=50, seed=2)
    both = cs[cs.relation == "P1"].reset_index(drop=True)
    assert np.allclose(one.delta_j, both.delta_j) and np.allclose(one.p_null, both.p_null)
    off = consistency_table(kn, n_null=0)
    assert off.delta_j.isna().all() and (off.null_reason == "not computed (n_null = 0)").all()


def test_jaccard_matrix_and_shift_power():
    sets = [{1, 2}, {2, 3}, set(), set()]
    jm = chance.jaccard_matrix(sets)
    assert jm[0, 1] == pytest.approx(1 / 3) and jm[0, 0] == 1.0 and jm[2, 3] == 0.0 and jm[0, 2] == 0.0
    null = np.random.default_rng(0).normal(0, 0.02, 1000)
    assert chance.shift_power(null, 0.0) == pytest.approx(0.05, abs=0.01)  # size α at no effect
    assert chance.shift_power(null, 0.2) == 1.0 and chance.shift_power(null, 0.02) < chance.shift_power(null, 0.05)
    assert cs2([{1}, {2}]) == 0.5  # (the CS2 floor the test above relies on)


def test_two_level_bootstrap_matches_its_exact_variance():
    """Equal cluster sizes: Var* = (1/R)[(1/R) Σ (ȳ_r − ȳ)² + (1/R) Σ σ_r²/m] (σ² with divisor m)."""
    rng = np.random.default_rng(0)
    R, m = 6, 5
    vals = rng.normal(size=(R, m)) + rng.normal(size=(R, 1)) * 2
    exact = (np.var(vals.mean(axis=1)) + np.mean(vals.var(axis=1) / m)) / R
    lo, hi = two_level_bootstrap_ci(vals.ravel(), np.repeat(np.arange(R), m), n_boot=20000, level=0.6827)
    half = (hi - lo) / 2
    assert half ** 2 == pytest.approx(exact, rel=0.1)
    assert lo < vals.mean() < hi
    # a one-level bootstrap over the 30 facts, ignoring the clusters, is far too narrow here
    naive = vals.var() / (R * m)
    assert naive < exact / 2


def test_fewer_other_facts_than_templates_repeat_facts_but_leave_their_own_pairs_out():
    """4 facts per relation asked with 8 templates: a pseudo-fact must reuse the 3 other facts. Under the null
    delta_j stays ≈ 0; with fact-specific cores delta_j keeps its size (≈ 0.12 as with 12 facts above), which
    it would not if the reused facts' own pairs entered the null."""
    null = consistency_table(toy_kn(8, 0.0, n_rel=12, n_facts=4, seed=5), n_null=200)
    fact = consistency_table(toy_kn(8, 0.9, n_rel=12, n_facts=4, seed=5), n_null=200)
    assert null.delta_j.notna().all() and fact.delta_j.notna().all()
    assert (null.k_null >= 6).all() and (null.n_null_facts == 3).all()  # a template may be asked of f alone
    assert abs(null.delta_j.mean()) < 0.02
    assert fact.delta_j.mean() > 0.09
