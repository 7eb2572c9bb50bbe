import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kqlib.paper import stats


def test_paired_wilcoxon_matches_scipy_and_handles_degenerate_cases():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20) + 0.5
    res = stats.paired_wilcoxon(a, b)
    ref = sps.wilcoxon(a - b)
    assert res.statistic == pytest.approx(ref.statistic) and res.p == pytest.approx(ref.pvalue)
    assert res.n == 20 and res.median_diff == pytest.approx(np.median(a - b)) and res.note == ""
    same = stats.paired_wilcoxon([1, 2, 3], [1, 2, 3])
    assert math.isnan(same.p) and "0" in same.note
    one = stats.paired_wilcoxon([1.0, np.nan], [2.0, 3.0])
    assert one.n == 1 and math.isnan(one.p) and ">= 2 pairs" in one.note
    with pytest.raises(Exception):
        stats.paired_wilcoxon([1, 2], [1, 2, 3])


def test_mean_ci_table_orders_ci_around_mean():
    df = pd.DataFrame({"g": ["a"] * 30 + ["b"] * 3, "v": list(np.linspace(0, 1, 30)) + [1.0, np.nan, 3.0]})
    out = stats.mean_ci_table(df, ["g"], "v", n_boot=500).set_index("g")
    assert out.loc["a", "n"] == 30 and out.loc["a", "ci_low"] <= out.loc["a", "mean"] <= out.loc["a", "ci_high"]
    assert out.loc["b", "n"] == 2 and out.loc["b", "mean"] == pytest.approx(2.0)


def test_paired_table_and_average():
    df = pd.DataFrame({
        "q": [0, 0, 1, 1, 2, 2, 3, 3],
        "cond": ["own", "nb"] * 4,
        "op": ["suppress"] * 8,
        "v": [-0.9, -0.1, -0.8, -0.2, -0.7, 0.0, -0.95, -0.05],
    })
    out = stats.paired_table(df, unit=["q"], column="cond", pairs=[("own", "nb"), ("own", "missing")], value="v",
                             by=["op"])
    row = out.iloc[0]
    assert row.n == 4 and row.mean_a < row.mean_b and 0 < row.p <= 1 and row.median_diff < 0
    assert out.iloc[1].n == 0 and math.isnan(out.iloc[1].p) and out.iloc[1].note
    two = pd.DataFrame({"q": [0, 0], "op": ["suppress", "enhance"], "v": [-0.5, 0.25], "other": [1, 2]})
    avg = stats.with_average(two, unit=["q"], column="op", value="v")
    extra = avg[avg.op == "average"].iloc[0]
    assert extra.v == pytest.approx(0.375) and math.isnan(extra.other) and len(avg) == 3


# ------------------------------------------------------------------------ the fact as the unit


def _clustered(n_facts=4, per_fact=30, seed=0):
    """Facts with very different means, many near-identical queries each (queries of a fact are dependent)."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_facts):
        mu = rng.normal(0, 1)
        for q in range(per_fact):
            rows.append({"fact_id": f"f{f}", "q": q, "v": mu + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def test_cluster_bootstrap_is_wider_than_a_query_bootstrap_on_dependent_queries():
    from kqlib.paper.consistency import bootstrap_ci

    df = _clustered()
    lo_q, hi_q = bootstrap_ci(df.v, n_boot=2000)
    lo_f, hi_f = stats.cluster_bootstrap_ci(df.v, df.fact_id, n_boot=2000)
    # the naive interval treats 120 queries as independent; the facts' spread is what varies between samples
    assert (hi_f - lo_f) > 5 * (hi_q - lo_q)
    fact_means = df.groupby("fact_id").v.mean()
    assert lo_f <= fact_means.mean() <= hi_f
    tab = stats.mean_ci_cluster_table(df.assign(g="a"), ["g"], "v", cluster=["fact_id"], n_boot=500)
    assert tab.n.iloc[0] == 4 and tab.n_rows.iloc[0] == 120


def test_cluster_bootstrap_coverage_beats_query_bootstrap():
    from kqlib.paper.consistency import bootstrap_ci

    hits_q = hits_f = 0
    for s in range(60):
        df = _clustered(n_facts=8, per_fact=10, seed=100 + s)
        lo, hi = bootstrap_ci(df.v, n_boot=300, seed=s)
        hits_q += lo <= 0.0 <= hi
        lo, hi = stats.cluster_bootstrap_ci(df.v, df.fact_id, n_boot=300, seed=s)
        hits_f += lo <= 0.0 <= hi
    assert hits_f >= 48 and hits_q <= 30  # true mean 0 (nominal 57 of 60): the query bootstrap under-covers


def test_paired_test_over_facts_not_queries():
    # two facts, 40 queries each, a consistent own > other difference: per query p is tiny, per fact the test
    # has only 2 pairs and cannot be significant
    rows = []
    for f, gap in (("a", 0.3), ("b", 0.2)):
        for q in range(40):
            rows.append({"fact_id": f, "q": q, "cond": "own", "v": gap + 0.001 * q})
            rows.append({"fact_id": f, "q": q, "cond": "nb", "v": 0.0})
    df = pd.DataFrame(rows)
    per_query = stats.paired_table(df, unit=["fact_id", "q"], column="cond", pairs=[("own", "nb")], value="v")
    per_fact = stats.paired_fact_table(df, cluster=["fact_id"], column="cond", pairs=[("own", "nb")], value="v")
    assert per_query.p.iloc[0] < 1e-6 and per_query.n.iloc[0] == 80
    r = per_fact.iloc[0]
    assert r.n == 2 and r.p >= 0.5 and r.unit == "fact"
    assert r["diff"] == pytest.approx((0.3 + 0.2) / 2 + 0.001 * 19.5)
    assert r.diff_low <= r["diff"] <= r.diff_high


def test_wilson_interval_does_not_collapse():
    from kqlib.paper.consistency import bootstrap_ci

    assert bootstrap_ci([1.0] * 16) == (1.0, 1.0)  # the percentile bootstrap collapses at 16/16
    lo, hi = stats.wilson_ci(16, 16)
    assert hi == 1.0 and 0.75 < lo < 0.85
    lo, hi = stats.wilson_ci(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = stats.wilson_ci(5, 10)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)
    assert all(math.isnan(v) for v in stats.wilson_ci(0, 0))


def test_share_difference_ci():
    d, lo, hi = stats.share_difference_ci([0] * 30 + [1] * 10, [1] * 30 + [0] * 10, n_boot=1000)
    assert d == pytest.approx(-0.5) and lo < d < hi < 0


def test_write_results_refuses_nested_nan(tmp_path, monkeypatch):
    """A NaN deep inside the numbers (a table row) is refused before anything is written (was: invalid JSON)."""
    import json

    from kqlib.book import report
    from kqlib.errors import ParameterError

    monkeypatch.setattr(report, "results_dir", lambda: tmp_path)
    with pytest.raises(ParameterError, match=r"numbers\['table'\]\[1\]\['x'\]"):
        report.write_results("99_x", {"a": 1.0, "table": [{"x": 1.0}, {"x": float("nan")}]}, {})
    assert not list(tmp_path.iterdir())
    path = report.write_results("99_x", {"a": 1.0, "table": [{"x": None}]}, {})
    assert json.loads(path.read_text())["numbers"]["table"] == [{"x": None}]


def test_newcombe_interval_of_two_shares_does_not_collapse_and_matches_its_wilson_construction():
    d, lo, hi = stats.newcombe_ci(0, 16, 0, 16)
    assert d == 0.0 and lo < -0.1 and hi > 0.1  # 0 % vs 0 %: not [0, 0]
    # Newcombe's hybrid: d − sqrt((p1 − l1)² + (u2 − p2)²), d + sqrt((u1 − p1)² + (p2 − l2)²)
    k1, n1, k2, n2 = 12, 20, 5, 25
    l1, u1 = stats.wilson_ci(k1, n1)
    l2, u2 = stats.wilson_ci(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    d, lo, hi = stats.newcombe_ci(k1, n1, k2, n2)
    assert d == pytest.approx(p1 - p2)
    assert lo == pytest.approx(d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    assert hi == pytest.approx(d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    assert all(map(math.isnan, stats.newcombe_ci(1, 0, 1, 3)))


def test_holm_matches_the_step_down_rule():
    p = [0.01, 0.04, 0.03, float("nan")]
    adj = stats.holm(p)
    # sorted 0.01, 0.03, 0.04 (m = 3): 0.03, max(0.03, 0.06), max(0.06, 0.04)
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[3])
    with pytest.raises(Exception):
        stats.holm([1.5])
