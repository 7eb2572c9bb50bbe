import math

import numpy as np
import pandas as pd
import pytest
import torch

from kqlib.paper.cas import cas_neurons, cas_scores

from kqlib.paper.consistency import (
    INTERSECTION_METHOD,
    bootstrap_ci,
    classify,
    consistency,
    consistency_table,
    cs1,
    cs2,
    ki_share_table,
    mean_pairwise_jaccard,
    otsu_threshold,
    share_inconsistent,
    welch_t,
)
from kqlib.errors import ParameterError

A, B, C = {(0, 1), (0, 2), (1, 3)}, {(0, 2), (1, 3), (2, 4)}, {(1, 3), (2, 5)}


# ------------------------------------------------------------------------------------ set scores


def test_identical_sets_score_one():
    s = {(0, 1), (2, 3)}
    for kind in ("cs1", "cs2", "pairwise"):
        assert consistency([s, set(s), set(s)], kind) == 1.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_disjoint_sets(k):
    sets = [{(0, i)} for i in range(k)]
    assert cs1(sets) == 0.0
    assert cs2(sets) == pytest.approx(1.0 / k)
    assert mean_pairwise_jaccard(sets) == 0.0


def test_hand_computed_example():
    # U = 5 neurons, ∩ = {(1,3)}; counts c = 1,2,3,1,1 -> Σc/k/|U| = 8/3/5; J(A,B)=2/4, J(A,C)=J(B,C)=1/4
    assert cs1([A, B, C]) == pytest.approx(1 / 5)
    assert cs2([A, B, C]) == pytest.approx(8 / 15)
    assert mean_pairwise_jaccard([A, B, C]) == pytest.approx((0.5 + 0.25 + 0.25) / 3)
    assert consistency([A, B, C]) == cs2([A, B, C])  # default kind is cs2
    assert cs1([A, B, C]) <= cs2([A, B, C]) <= 1.0


def test_empty_sets():
    assert cs1([set(), set()]) == cs2([set(), set()]) == mean_pairwise_jaccard([set(), set()]) == 0.0
    assert cs1([{(0, 1)}, set()]) == 0.0
    assert cs2([{(0, 1)}, set()]) == 0.5  # one neuron, in 1 of 2 queries
    assert cs2([[(0, 1)], [(0, 1)]]) == 1.0  # any iterables of neurons


def test_consistency_errors():
    with pytest.raises(ParameterError, match="unknown consistency kind"):
        consistency([A, B], "cs3")
    with pytest.raises(ParameterError, match="at least 2"):
        cs1([A])
    with pytest.raises(ParameterError, match="sequence of KN sets"):
        cs2(A)


# ------------------------------------------------------------------------------------ Otsu, stats


def test_otsu_hand_computed():
    # values 0..4 with counts 4,2,0,1,3 and 5 bins on [0, 4]: bin centres 0.4, 1.2, 2.0, 2.8, 3.6.
    # between-class variance per split (levels 0..4, affine in the centres): after bin 0: .24*(17/6)^2=1.93;
    # after 1 (and 2, empty bin): .24*(3.75-1/3)^2=2.80 (max, first wins); after 3: .21*(4-5/7)^2=2.27
    values = [0] * 4 + [1] * 2 + [3] + [4] * 3
    assert otsu_threshold(values, bins=5) == pytest.approx(1.2)
    assert otsu_threshold(values, bins=5, position="edge") == pytest.approx(1.6)  # upper edge of bin 1
    with pytest.raises(ParameterError):
        otsu_threshold(values, position="middle")


def test_otsu_separates_two_clusters():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0.1, 0.02, 200), rng.normal(0.7, 0.05, 100)
    theta = otsu_threshold(np.concatenate([low, high]))
    assert low.max() < theta < high.min()
    assert share_inconsistent(np.concatenate([low, high]), theta) == pytest.approx(200 / 300)


def test_otsu_edge_cases():
    assert otsu_threshold([0.25, 0.25, 0.25]) == 0.25
    with pytest.raises(ParameterError):
        otsu_threshold([])
    with pytest.raises(ParameterError):
        otsu_threshold([0.1, float("nan")])


def test_otsu_matches_skimage():
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(1)
    for _ in range(3):
        values = np.concatenate([rng.beta(2, 8, 150), rng.beta(8, 3, 60)])
        assert otsu_threshold(values) == pytest.approx(float(filters.threshold_otsu(values, nbins=256)))


def test_classify_and_share():
    cs = [0.1, 0.3, 0.29, 0.8]
    assert classify(cs, 0.3).tolist() == [True, False, True, False]  # K_I iff CS < θ
    assert share_inconsistent(cs, 0.3) == 0.5
    with pytest.raises(ParameterError):
        classify([0.1, float("nan")], 0.3)


def test_bootstrap_ci():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, 400)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.4
    assert bootstrap_ci(x) == (lo, hi)  # seeded
    flags = np.array([True] * 30 + [False] * 70)
    lo, hi = bootstrap_ci(flags, n_boot=500)
    assert 0.15 < lo < 0.3 < hi < 0.45
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    lo_m, hi_m = bootstrap_ci(x, stat=lambda s: float(np.median(s)), n_boot=200)  # no axis argument
    assert lo_m < np.median(x) < hi_m


def test_welch():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.1, 30), rng.normal(0.1, 0.05, 50)
    t, p = welch_t(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue) and p < 1e-6
    res = welch_t([0.5], b)
    assert math.isnan(res.p) and "2 values" in res.note
    res = welch_t([0.5, 0.5], [0.5, 0.5])
    assert math.isnan(res.p) and "zero variance" in res.note
    res = welch_t([0.5, 0.5], [0.1, 0.1])
    assert res.t == math.inf and res.p == 0.0 and "zero variance" in res.note


# ---------------------------------------------------------------------------------------- tables


def _frames():
    """Two methods on fact f1 (3 queries) and f2 (2 queries); query (f1, 2) of method ig has no KN."""
    kn_rows = []
    def add(method, fact, pattern, neurons):
        for l, n in neurons:
            kn_rows.append(dict(model="m", method=method, fact_id=fact, relation="P1", pattern_index=pattern,
                                layer=l, neuron=n))
    add("ig", "f1", 0, [(0, 1), (0, 2)])
    add("ig", "f1", 1, [(0, 1), (0, 2)])
    add("ig", "f2", 0, [(1, 1)])
    add("ig", "f2", 1, [(1, 1)])
    add("sig", "f1", 0, [(0, 1)])
    add("sig", "f1", 1, [(0, 2)])
    add("sig", "f1", 2, [(0, 3)])
    add("sig", "f2", 0, [(2, 2), (2, 3)])
    add("sig", "f2", 1, [(2, 2)])
    queries = pd.DataFrame([dict(model="m", fact_id=f, relation="P1", pattern_index=p, prompt="x")
                            for f, n in (("f1", 3), ("f2", 2)) for p in range(n)])  # no method column: all
    return pd.DataFrame(kn_rows), queries


def test_consistency_table_counts_empty_queries():
    kn, queries = _frames()
    cs = consistency_table(kn, queries=queries).set_index(["method", "fact_id"])
    f1 = cs.loc[("ig", "f1")]
    assert f1.n_queries == 3 and f1.union_size == 2 and f1.intersection_size == 0
    assert f1.cs1 == 0.0 and f1.cs2 == pytest.approx(4 / 6) and f1.pairwise == pytest.approx(1 / 3)
    assert cs.loc[("ig", "f2")].cs1 == 1.0 and cs.loc[("ig", "f2")].cs2 == 1.0
    assert cs.loc[("sig", "f1")].cs2 == pytest.approx(1 / 3)
    assert cs.loc[("sig", "f2")].cs1 == pytest.approx(0.5) and cs.loc[("sig", "f2")].cs2 == pytest.approx(0.75)
    assert set(cs.relation) == {"P1"}
    # without the queries frame, the empty query of (ig, f1) is missed: 2 identical sets
    no_q = consistency_table(kn).set_index(["method", "fact_id"])
    assert no_q.loc[("ig", "f1")].n_queries == 2 and no_q.loc[("ig", "f1")].cs1 == 1.0
    # a NaN-neuron row marks an empty query, too
    marker = pd.DataFrame([dict(model="m", method="ig", fact_id="f1", relation="P1", pattern_index=2,
                                layer=np.nan, neuron=np.nan)])
    with_marker = consistency_table(pd.concat([kn, marker])).set_index(["method", "fact_id"])
    assert with_marker.loc[("ig", "f1")].n_queries == 3 and with_marker.loc[("ig", "f1")].cs2 == pytest.approx(4 / 6)


def test_consistency_table_single_query_is_nan_and_missing_columns_error():
    kn, _ = _frames()
    one = kn[(kn.fact_id == "f2") & (kn.pattern_index == 0)]
    assert math.isnan(consistency_table(one).cs2.iloc[0])
    with pytest.raises(ParameterError, match="lacks column"):
        consistency_table(kn.drop(columns=["neuron"]))


def test_ki_share_table():
    cs = pd.DataFrame(dict(
        model="m", method=["ig"] * 4 + ["sig"] * 4, fact_id=["a", "b", "c", "d"] * 2,
        cs2=[0.1, 0.2, 0.9, 0.8, 0.1, 0.5, 0.05, 0.9],
    ))
    tab = ki_share_table(cs, static=0.3, otsu=True, n_boot=200)
    static = tab[tab.threshold_kind == "static"].set_index("method")
    assert static.loc["ig"].share_ki == 0.5 and static.loc["ig"].n_facts == 4
    assert static.loc["sig"].share_ki == 0.5
    # ∩: inconsistent under both methods: only fact "a" (b is K_I under ig, K_C under sig; c vice versa)
    inter = static.loc[INTERSECTION_METHOD]
    assert inter.share_ki == 0.25 and inter.n_facts == 4 and inter.n_ki == 1
    assert static.loc["ig"].ci_low <= 0.5 <= static.loc["ig"].ci_high
    otsu = tab[tab.threshold_kind == "otsu"].set_index("method")
    assert 0.2 <= otsu.loc["ig"].threshold < 0.8 and otsu.loc["ig"].share_ki == 0.5
    assert set(tab.method) == {"ig", "sig", INTERSECTION_METHOD} and len(tab) == 6
    assert not math.isnan(static.loc["ig"].welch_p)
    # a sweep of static thresholds gives one row per value
    sweep = ki_share_table(cs, static=[0.1, 0.3, 0.5], otsu=False, n_boot=50)
    assert len(sweep) == 9
    ig = sweep[sweep.method == "ig"].set_index("threshold").share_ki
    assert list(ig) == [0.0, 0.5, 0.5]
    with pytest.raises(ParameterError):
        ki_share_table(cs, kind="cs9")


def test_ki_share_table_intersection_uses_common_facts():
    cs = pd.DataFrame(dict(model="m", method=["ig", "ig", "sig"], fact_id=["a", "b", "a"], cs2=[0.1, 0.1, 0.1]))
    tab = ki_share_table(cs, otsu=False, n_boot=20).set_index("method")
    assert tab.loc[INTERSECTION_METHOD].n_facts == 1 and tab.loc[INTERSECTION_METHOD].share_ki == 1.0
    assert "2 values" in tab.loc["ig"].note  # no K_C group: Welch undefined


# ----------------------------------------------------------------------------------------- CAS


def test_cas_scores_hand_computed():
    s = torch.zeros(2, 2, 3)
    s[0, 0] = torch.tensor([2.0, 1.0, 0.0])   # max 2 -> [1, .5, 0]
    s[1, 0] = torch.tensor([4.0, 0.0, 0.0])   # max 4 -> [1, 0, 0]
    cas = cas_scores(s)
    assert cas.shape == (2, 3)
    # neuron (0,0): μ=1, σ=0 -> 1; neuron (0,1): μ=.25, σ=.25 -> 0
    torch.testing.assert_close(cas[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(cas_scores(s, beta1=1.0, beta2=0.0)[0], torch.tensor([1.0, 0.25, 0.0]))
    torch.testing.assert_close(cas_scores([s[0], s[1]]), cas)  # a list of per-query [L, N] tensors
    raw = cas_scores(s, normalize=None)
    torch.testing.assert_close(raw[0, 0], torch.tensor(3.0 - 1.0))  # μ=3, population σ=1
    # a query with no positive score contributes zeros
    torch.testing.assert_close(cas_scores(torch.full((1, 2, 2), -1.0)), torch.zeros(2, 2))
    with pytest.raises(ParameterError):
        cas_scores(torch.zeros(2, 3))
    with pytest.raises(ParameterError):
        cas_scores(s, normalize="sum")


def test_cas_neurons():
    cas = torch.tensor([[1.0, 0.25, -0.5], [0.9, 0.05, 0.0]])
    assert cas_neurons(cas, threshold=0.3) == {(0, 0), (1, 0)}
    assert cas_neurons(cas, threshold=0.2, method="static") == {(0, 0), (0, 1), (1, 0)}
    assert cas_neurons(cas, method="otsu") == {(0, 0), (1, 0)}
    assert cas_neurons(-cas.abs() - 1) == set()
    assert cas_neurons(torch.tensor([[0.5, 0.0]]), method="otsu") == {(0, 0)}
    with pytest.raises(ParameterError):
        cas_neurons(cas, method="mean")


def test_ki_share_table_wilson_k_none_and_otsu_reestimated():
    # 16 facts all below θ: the Wilson interval does not collapse to [1, 1]
    cs = pd.DataFrame(dict(model="m", method="ig", fact_id=[f"f{i}" for i in range(18)],
                           cs2=[0.1] * 16 + [0.0, 0.0], union_size=[5] * 16 + [0, 0]))
    tab = ki_share_table(cs, static=0.3, otsu=False, n_boot=100).set_index("method")
    row = tab.loc["ig"]
    # the two facts without any knowledge neuron are K_none: counted, not K_I
    assert row.n_none == 2 and row.n_facts == 16 and row.n_ki == 16 and row.share_ki == 1.0
    assert 0.75 < row.ci_low < 1.0 and row.ci_high == 1.0 and row.ci_method == "Wilson"
    assert tab.loc[INTERSECTION_METHOD].n_none == 2
    # Otsu's θ re-estimated in every resample. Three clusters of CS: depending on the sample, Otsu splits off
    # the low or the high cluster, so the share itself varies a lot between samples; a bootstrap of the K_I
    # flags at the one θ of the observed sample ignores that and is far too narrow.
    rng = np.random.default_rng(1)

    def sample(n=60):
        return np.clip(rng.choice([0.1, 0.5, 0.9], n) + rng.normal(0, 0.03, n), 0, 1)

    true = [(v < otsu_threshold(v)).mean() for v in (sample() for _ in range(300))]
    true_width = np.quantile(true, 0.975) - np.quantile(true, 0.025)
    widths_right, widths_wrong = [], []
    for s in range(8):
        vals = sample()
        cs = pd.DataFrame(dict(model="m", method="ig", fact_id=[f"f{i}" for i in range(60)], cs2=vals))
        otsu = ki_share_table(cs, static=None, otsu=True, n_boot=300, seed=s).iloc[0]
        assert otsu.ci_method.startswith("bootstrap")
        widths_right.append(otsu.ci_high - otsu.ci_low)
        lo, hi = bootstrap_ci(vals < otsu.threshold, n_boot=300, seed=s)
        widths_wrong.append(hi - lo)
    assert abs(np.mean(widths_right) - true_width) < abs(np.mean(widths_wrong) - true_width)
    assert np.mean(widths_wrong) < 0.75 * true_width <= np.mean(widths_right)


def test_fact_without_any_knowledge_neuron_is_k_none_not_k_i():
    from kqlib.paper.consistency import class_label_series, class_labels

    labels = class_labels([0.0, 0.1, 0.5], 0.3, union_size=[0, 4, 4])
    assert list(labels) == ["K_none", "K_I", "K_C"]
    cs = pd.DataFrame(dict(model="m", method="ig", fact_id=list("abc"), cs2=[0.0, 0.1, 0.5], union_size=[0, 4, 4]))
    assert list(class_label_series(cs, 0.3)) == ["K_none", "K_I", "K_C"]
