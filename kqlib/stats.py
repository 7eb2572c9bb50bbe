"""Small statistics helpers for the chapters: per-group means with bootstrap CIs and paired tests.

* :func:`mean_ci_table` -- mean, percentile-bootstrap CI and n of a value per group of a tidy frame.
* :func:`paired_wilcoxon` -- Wilcoxon signed-rank test of paired samples (scipy), NaN with a reason when
  the test is undefined (fewer than 2 pairs, or every difference is zero).
* :func:`paired_table` -- pair two conditions of a tidy frame per unit (e.g. per query) and test them.
* :func:`with_average` -- add "average" rows: the mean of |value| over the levels of one column per unit
  (the paper's "Avg" bar of suppression and enhancement).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from .consistency import bootstrap_ci
from .errors import ParameterError


def _require(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(f"the frame lacks column(s) {missing}; it has {list(df.columns)}")


def mean_ci_table(df: pd.DataFrame, by: Sequence[str], value: str, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by``: n (non-NaN values), mean, ci_low, ci_high (percentile bootstrap of the
    mean, :func:`kqlib.consistency.bootstrap_ci`). NaN values are dropped; an empty group gets NaN."""
    by = list(by)
    _require(df, by + [value])
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        vals = g[value].astype(float).dropna().to_numpy()
        lo, hi = bootstrap_ci(vals, n_boot=n_boot, level=level, seed=seed)
        rows.append({**dict(zip(by, key)), "n": int(vals.size),
                     "mean": float(vals.mean()) if vals.size else math.nan, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=by + ["n", "mean", "ci_low", "ci_high"])


class PairedResult(tuple):
    """``(statistic, p)`` of a paired test with ``.n`` (pairs used), ``.median_diff`` (median of a − b) and
    ``.note`` (why the test is undefined, else "")."""

    def __new__(cls, statistic: float, p: float, n: int, median_diff: float, note: str = ""):
        self = super().__new__(cls, (float(statistic), float(p)))
        self.n, self.median_diff, self.note = int(n), float(median_diff), note
        return self

    @property
    def statistic(self) -> float:
        return self[0]

    @property
    def p(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return (f"PairedResult(statistic={self.statistic:.4g}, p={self.p:.4g}, n={self.n}, "
                f"median_diff={self.median_diff:.4g}{', note=' + repr(self.note) if self.note else ''})")


def paired_wilcoxon(a, b) -> PairedResult:
    """Two-sided Wilcoxon signed-rank test of the paired samples ``a`` and ``b`` (``scipy.stats.wilcoxon`` on
    d = a − b, zero differences dropped: ``zero_method="wilcox"``). Pairs with a NaN are dropped first.

    Undefined (statistic and p NaN, ``.note`` says why) with fewer than 2 pairs or when every difference is 0.
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ParameterError(f"paired samples must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = int(d.size)
    med = float(np.median(d)) if n else math.nan
    if n < 2:
        return PairedResult(math.nan, math.nan, n, med, f"Wilcoxon test needs >= 2 pairs (got {n})")
    if not np.any(d != 0):
        return PairedResult(math.nan, math.nan, n, med, "every paired difference is 0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedResult(float(res.statistic), float(res.pvalue), n, med)


def paired_table(df: pd.DataFrame, unit: Sequence[str], column: str, pairs: Sequence[tuple[str, str]],
                 value: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """Paired Wilcoxon tests of ``value`` between levels of ``column`` (each ``(a, b)`` in ``pairs``), pairing
    rows by ``unit`` (e.g. the query's keys), separately for every group of ``by``.

    One row per (group, pair): a, b, n (complete pairs), mean_a, mean_b, median_diff (a − b), statistic, p, note.
    """
    by, unit = list(by), list(unit)
    _require(df, by + unit + [column, value])
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot_table(index=unit, columns=column, values=value, aggfunc="first", dropna=False)
        for a, b in pairs:
            if a in wide.columns and b in wide.columns:
                sub = wide[[a, b]].dropna()
                res = paired_wilcoxon(sub[a], sub[b])
                ma, mb = (float(sub[a].mean()), float(sub[b].mean())) if len(sub) else (math.nan, math.nan)
            else:
                res, ma, mb = PairedResult(math.nan, math.nan, 0, math.nan, f"no {a!r} or {b!r} rows"), math.nan, math.nan
            rows.append({**dict(zip(by, key)), "a": a, "b": b, "n": res.n, "mean_a": ma, "mean_b": mb,
                         "median_diff": res.median_diff, "statistic": res.statistic, "p": res.p, "note": res.note})
    return pd.DataFrame(rows, columns=by + ["a", "b", "n", "mean_a", "mean_b", "median_diff", "statistic", "p", "note"])


def with_average(df: pd.DataFrame, unit: Sequence[str], column: str, value: str, label: str = "average") -> pd.DataFrame:
    """``df`` plus one row per ``unit`` whose ``column`` is ``label`` and whose ``value`` is the mean of |value|
    over that unit's rows (e.g. column "operation": Avg = (|ΔProb_suppress| + |ΔProb_enhance|) / 2). The new
    rows carry only the ``unit`` columns, ``column`` and ``value`` (other columns NaN); NaN values are ignored
    (all NaN -> NaN)."""
    unit = list(unit)
    _require(df, unit + [column, value])
    if df.empty:
        return df.copy()
    avg = (df.assign(_abs=df[value].astype(float).abs())
           .groupby(unit, sort=False, dropna=False)["_abs"].mean().rename(value).reset_index())
    avg[column] = label
    return pd.concat([df, avg], ignore_index=True)
