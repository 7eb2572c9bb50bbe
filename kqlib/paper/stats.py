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
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from kqlib.errors import ParameterError
from kqlib.paper.intervals import finite_clustered
from kqlib.paper.intervals import holm, newcombe_ci, two_level_bootstrap_ci, wilson_ci  # noqa: F401 (re-exported)


def bootstrap_ci(values, stat: Callable = np.mean, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(values)``: resample n values with replacement ``n_boot`` times and
    take the (1−level)/2 and (1+level)/2 quantiles of the statistic. Booleans count as 0/1. (nan, nan) for
    no values."""
    if not 0.0 < level < 1.0:
        raise ParameterError(f"level must be in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ParameterError(f"n_boot must be >= 1, got {n_boot}")
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(int(n_boot), arr.size))
    samples = arr[idx]
    try:
        stats = np.asarray(stat(samples, axis=1), dtype=np.float64).reshape(-1)
        if stats.size != int(n_boot):
            raise TypeError
    except TypeError:  # a statistic without an axis argument
        stats = np.array([float(stat(s)) for s in samples])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(low), float(high))


class WelchResult(tuple):
    """``(t, p)`` of Welch's t-test; ``.t``, ``.p`` and ``.note`` (why p is NaN, else "")."""

    def __new__(cls, t: float, p: float, note: str = ""):
        self = super().__new__(cls, (float(t), float(p)))
        self.note = note
        return self

    @property
    def t(self) -> float:
        return self[0]

    @property
    def p(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return f"WelchResult(t={self.t:.4g}, p={self.p:.4g}{', note=' + repr(self.note) if self.note else ''})"


def finite_or_none(x) -> float | None:
    """``float(x)`` when it is a finite number, else ``None`` (JSON has no NaN; the results refuse it)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt(x, spec: str = ".2f", missing: str = "not measurable") -> str:
    """``format(x, spec)``, or ``missing`` for None / NaN."""
    return missing if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def _require(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(f"the frame lacks column(s) {missing}; it has {list(df.columns)}")


def mean_ci_table(df: pd.DataFrame, by: Sequence[str], value: str, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by``: n (non-NaN values), mean, ci_low, ci_high (percentile bootstrap of the
    mean, :func:`kqlib.paper.consistency.bootstrap_ci`). NaN values are dropped; an empty group gets NaN."""
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
    from scipy import stats  # heavy: scipy, not loaded by `import kqlib` or `kq`

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


# ------------------------------------------------------------------------ units, proportions, clusters
#
# The unit of resampling is the FACT: the queries (paraphrases) of one fact share its subject, answer and
# largely its knowledge neurons, so they are not independent draws. Resampling or testing queries as if they
# were independent makes intervals too narrow and p-values too small (tests/paper/test_stats.py shows both).


def cluster_bootstrap_ci(values, clusters, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the pooled mean of ``values`` when whole ``clusters`` (e.g. facts) are resampled with
    replacement: each resample draws as many clusters as there are and pools all their values. NaN values are
    dropped first; (nan, nan) for no values."""
    v, c = finite_clustered(values, clusters)
    if v.size == 0:
        return (math.nan, math.nan)
    codes, uniq = pd.factorize(pd.Series(c, dtype=object))
    sums = np.bincount(codes, weights=v, minlength=len(uniq))
    counts = np.bincount(codes, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(uniq), size=(int(n_boot), len(uniq)))
    stats_ = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats_, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def mean_ci_cluster_table(df: pd.DataFrame, by: Sequence[str], value: str, cluster: Sequence[str],
                          n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Like :func:`mean_ci_table` with ``cluster`` (e.g. ``["model", "fact_id"]``) as the resampling unit.

    One row per group of ``by``: n (clusters with a value, the unit of the CI), n_rows (values), mean (pooled
    over the rows), ci_low, ci_high (:func:`cluster_bootstrap_ci`)."""
    by, cluster = list(by), list(cluster)
    _require(df, by + cluster + [value])
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g[np.isfinite(g[value].astype(float))]
        cl = list(zip(*(g[c] for c in cluster))) if len(g) else []
        lo, hi = cluster_bootstrap_ci(g[value].astype(float), [str(x) for x in cl], n_boot=n_boot, level=level,
                                      seed=seed) if len(g) else (math.nan, math.nan)
        rows.append({**dict(zip(by, key)), "n": len(set(cl)), "n_rows": int(len(g)),
                     "mean": float(g[value].astype(float).mean()) if len(g) else math.nan,
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=by + ["n", "n_rows", "mean", "ci_low", "ci_high"])


def per_cluster_means(df: pd.DataFrame, cluster: Sequence[str], column: str, value: str,
                      by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean of ``value`` per (by, cluster, column level): the per-fact aggregate that a paired test over facts
    uses (queries of one fact are averaged first, so each fact counts once)."""
    keys = list(by) + list(cluster) + [column]
    _require(df, keys + [value])
    return df.groupby(keys, sort=True, dropna=False)[value].mean().reset_index()


def paired_fact_table(df: pd.DataFrame, cluster: Sequence[str], column: str, pairs: Sequence[tuple[str, str]],
                      value: str, by: Sequence[str] = (), n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """Paired Wilcoxon tests with the FACT (``cluster``) as the unit: ``value`` is averaged over the rows of
    each (group, cluster, level of ``column``) first, then the levels ``(a, b)`` are paired per cluster.

    One row per (group, pair): a, b, n (paired facts), mean_a, mean_b (means of the per-fact means),
    median_diff, statistic, p, note (as :func:`paired_table`), diff = mean over facts of (a − b) with a
    percentile-bootstrap CI over facts (diff_low, diff_high), and unit = "fact"."""
    by, cluster = list(by), list(cluster)
    agg = per_cluster_means(df, cluster, column, value, by)
    groups = agg.groupby(by, sort=True, dropna=False) if by else [((), agg)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot_table(index=cluster, columns=column, values=value, aggfunc="first", dropna=False)
        for a, b in pairs:
            if a in wide.columns and b in wide.columns:
                sub = wide[[a, b]].dropna()
                res = paired_wilcoxon(sub[a], sub[b])
                d = (sub[a] - sub[b]).to_numpy(np.float64)
                ma, mb = (float(sub[a].mean()), float(sub[b].mean())) if len(sub) else (math.nan, math.nan)
            else:
                res = PairedResult(math.nan, math.nan, 0, math.nan, f"no {a!r} or {b!r} rows")
                d, ma, mb = np.array([]), math.nan, math.nan
            lo, hi = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
            rows.append({**dict(zip(by, key)), "a": a, "b": b, "n": res.n, "mean_a": ma, "mean_b": mb,
                         "median_diff": res.median_diff, "statistic": res.statistic, "p": res.p, "note": res.note,
                         "diff": float(d.mean()) if d.size else math.nan, "diff_low": lo, "diff_high": hi,
                         "unit": "fact"})
    return pd.DataFrame(rows, columns=by + ["a", "b", "n", "mean_a", "mean_b", "median_diff", "statistic", "p",
                                            "note", "diff", "diff_low", "diff_high", "unit"])


def share_difference_ci(flags_a, flags_b, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a) − mean(b), low, high)``: difference of two proportions (0/1 per fact, two independent
    samples, e.g. two models), percentile bootstrap resampling the facts of each sample independently."""
    a = np.asarray(flags_a, dtype=np.float64).reshape(-1)
    b = np.asarray(flags_b, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, a.size, size=(int(n_boot), a.size))].mean(axis=1)
    db = b[rng.integers(0, b.size, size=(int(n_boot), b.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(da - db, [alpha, 1.0 - alpha])
    return (float(a.mean() - b.mean()), float(lo), float(hi))


def ci_cell(value, low, high, spec: str = ".2f") -> str:
    """"v [lo, hi]", "v" when the interval is degenerate, "–" when v is missing."""
    if value is None or not np.isfinite(value):
        return "–"
    if low is not None and np.isfinite(low) and high > low:
        return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"
    return f"{value:{spec}}"


def welch_t(a, b) -> WelchResult:
    """Welch's unequal-variance t-test of mean(a) vs mean(b): t = (ā − b̄)/sqrt(s_a²/n_a + s_b²/n_b),
    two-sided p from ``scipy.stats.ttest_ind(a, b, equal_var=False)``.

    Returns ``(t, p)`` (a :class:`WelchResult`); when a group has < 2 members or both have zero variance,
    t and/or p are NaN and ``.note`` says why."""
    from scipy import stats  # heavy: scipy, not loaded by `import kqlib` or `kq`

    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size < 2 or b.size < 2:
        return WelchResult(math.nan, math.nan, f"Welch test needs >= 2 values per group (got {a.size} and {b.size})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    t, p = float(res.statistic), float(res.pvalue)
    note = ""
    if a.var() == 0 and b.var() == 0:
        note = "both groups have zero variance (t = ±inf when the means differ, NaN when equal)"
    elif math.isnan(p):
        note = "test undefined"
    return WelchResult(t, p, note)


# ------------------------------------------------------------------------------------------ Otsu


def _finite_1d(values, what: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ParameterError(f"{what} is empty")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{what} contains NaN or infinite entries; drop them first")
    return arr


def otsu_threshold(values, bins: int = 256, position: str = "center") -> float:
    """Otsu's threshold of ``values`` (any shape, flattened).

    Histogram with ``bins`` equal bins on [min, max], bin centres x_b. For each split after bin t:
    ω0 = Σ_{b≤t} h_b, ω1 = Σ_{b>t} h_b, μ0, μ1 the class means of x_b; return the centre x_t of the split
    maximising the between-class variance ω0·ω1·(μ0 − μ1)² (first maximum on ties).

    ``position="center"``: θ = x_t, the same algorithm and result as
    ``skimage.filters.threshold_otsu(values, nbins=bins)``. ``"edge"``: θ = the upper edge of bin t, so that
    ``values < θ`` is exactly the histogram's low class (values inside bin t above its centre stay low; matters
    only for few values). All values equal -> that value.
    """
    arr = _finite_1d(values)
    if int(bins) < 2:
        raise ParameterError(f"bins must be >= 2, got {bins}")
    if position not in ("center", "edge"):
        raise ParameterError(f"position must be 'center' or 'edge', got {position!r}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(arr, bins=int(bins), range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2.0
    hist = hist.astype(np.float64)
    w0 = np.cumsum(hist)
    w1 = np.cumsum(hist[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = np.cumsum(hist * centres) / w0
        mu1 = (np.cumsum((hist * centres)[::-1]) / w1[::-1])[::-1]
    between = w0[:-1] * w1[1:] * (mu0[:-1] - mu1[1:]) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    best = int(np.argmax(between))
    return float(centres[best] if position == "center" else edges[best + 1])
