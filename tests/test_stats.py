import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kqlib import stats


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
