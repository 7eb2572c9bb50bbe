"""Intervals and multiplicity from the field's maintained implementations, and the one resampling scheme
they lack.

* :func:`wilson_ci` -- Wilson score interval of a share (statsmodels).
* :func:`newcombe_ci` -- Newcombe's interval of a difference of two independent shares (statsmodels).
* :func:`holm` -- Holm's family-wise adjusted p-values (statsmodels).
* :func:`two_level_bootstrap_ci` -- percentile bootstrap resampling clusters (relations), then units (facts)
  inside each drawn cluster (hand-written: no library offers it; tested against its exact variance).
* :func:`unit_interval` -- a claim's interval in the unit it resamples: the relation (facts within) when there
  are at least :data:`MIN_RELATIONS` relations, else the fact (and it says so).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kqlib.errors import ParameterError

MIN_RELATIONS = 8  # relations needed before the relation is the resampling unit of a claim's verdict


def finite_clustered(values, clusters) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (float64) and their ``clusters`` (object) as flat arrays of the same length, the non-finite
    values dropped; a length mismatch is an error."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    c = np.asarray(clusters, dtype=object).reshape(-1)
    if v.shape != c.shape:
        raise ParameterError(f"values and clusters must have the same length, got {v.size} and {c.size}")
    ok = np.isfinite(v)
    return v[ok], c[ok]


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n: (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)
    (``statsmodels.stats.proportion.proportion_confint(method="wilson")``).

    Unlike a bootstrap of 0/1 values it does not collapse at k = 0 or k = n (16/16 -> [0.81, 1]).
    (nan, nan) for n = 0."""
    # heavy: statsmodels, not loaded by `import kqlib` or `kq`
    from statsmodels.stats.proportion import proportion_confint

    if not 0.0 < level < 1.0:
        raise ParameterError(f"level must be in (0, 1), got {level}")
    n, k = int(n), int(k)
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ParameterError(f"k must be in [0, n], got k={k}, n={n}")
    lo, hi = proportion_confint(k, n, alpha=1.0 - level, method="wilson")
    return (max(0.0, float(lo)), min(1.0, float(hi)))


def newcombe_ci(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float, float]:
    """``(k1/n1 − k2/n2, low, high)``: Newcombe's hybrid score interval of a difference of two independent
    proportions (``statsmodels.stats.proportion.confint_proportions_2indep(method="newcomb")``, built from the
    two Wilson intervals: it does not collapse at 0/n vs 0/m). NaNs when a sample is empty."""
    # heavy: statsmodels, not loaded by `import kqlib` or `kq`
    from statsmodels.stats.proportion import confint_proportions_2indep

    if min(int(n1), int(n2)) <= 0:
        return (math.nan, math.nan, math.nan)
    for k, n in ((k1, n1), (k2, n2)):
        if not 0 <= int(k) <= int(n):
            raise ParameterError(f"k must be in [0, n], got k={k}, n={n}")
    lo, hi = confint_proportions_2indep(int(k1), int(n1), int(k2), int(n2), method="newcomb", compare="diff",
                                        alpha=1.0 - level)
    return (int(k1) / int(n1) - int(k2) / int(n2), float(lo), float(hi))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (``statsmodels.stats.multitest.multipletests(method="holm")``):
    p_(i) sorted ascending, adj_(i) = max_{j≤i} min(1, (m − j + 1)·p_(j)). NaN entries stay NaN and do not
    count in m."""
    from statsmodels.stats.multitest import multipletests  # heavy: statsmodels, not loaded by `import kqlib` or `kq`

    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        if ((p[ok] < 0) | (p[ok] > 1)).any():
            raise ParameterError(f"p-values must lie in [0, 1], got {p[ok].tolist()}")
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def two_level_bootstrap_ci(values, clusters, n_boot: int = 2000, level: float = 0.95,
                           seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the pooled mean of ``values`` under a two-level bootstrap: draw as many clusters (e.g.
    relations) as there are with replacement, then, inside each drawn cluster, as many units (its facts) as it
    has with replacement; the statistic is the mean over all drawn units. With equal cluster sizes m and R
    clusters its variance is (1/R)·[(1/R) Σ_r (ȳ_r − ȳ)² + (1/R) Σ_r σ_r²/m] (σ_r² the within-cluster
    variance with divisor m), which the tests check. NaN values are dropped; (nan, nan) for no values."""
    if int(n_boot) < 1:
        raise ParameterError(f"n_boot must be >= 1, got {n_boot}")
    v, c = finite_clustered(values, clusters)
    if v.size == 0:
        return (math.nan, math.nan)
    codes, uniq = pd.factorize(pd.Series(c, dtype=object))
    groups = [v[codes == i] for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    stats_ = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        total, count = 0.0, 0
        for g in rng.integers(0, len(groups), size=len(groups)):
            vals = groups[g]
            total += float(vals[rng.integers(0, vals.size, size=vals.size)].sum())
            count += vals.size
        stats_[b] = total / count
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats_, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def unit_interval(values, relations, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                  min_relations: int = MIN_RELATIONS, test: bool = False) -> dict:
    """The mean of per-fact ``values`` (one per fact, NaN dropped) with the interval a claim is judged on, in
    the unit it resamples. With at least ``min_relations`` relations: :func:`two_level_bootstrap_ci` over
    relations (facts within), n = relations. Otherwise a percentile bootstrap over facts, n = facts, and
    ``detail`` says that the fact stayed the unit. ``test``: also ``p``, the two-sided Wilcoxon signed-rank p
    (``scipy.stats.wilcoxon``, zero differences dropped) of the unit's values against 0 (per-relation means
    when the relation is the unit; None when fewer than 2 nonzero).

    Returns dict(estimate, low, high, n, unit, detail[, p]); estimate None when no value."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    r = np.asarray(relations, dtype=object).reshape(-1)
    if v.shape != r.shape:
        raise ParameterError(f"values and relations must have the same length, got {v.size} and {r.size}")
    ok = np.isfinite(v)
    v, r = v[ok], r[ok]
    n_rel = int(pd.Series(r, dtype=object).nunique())
    if n_rel >= int(min_relations):
        lo, hi = two_level_bootstrap_ci(v, r, n_boot=n_boot, level=level, seed=seed)
        unit_values = pd.Series(v).groupby(pd.Series(r, dtype=object).to_numpy()).mean().to_numpy(float)
        out = dict(n=n_rel, unit="relations",
                   detail=f"the relation is the resampling unit ({n_rel} relations, {v.size} facts within)")
    else:
        if v.size:
            rng = np.random.default_rng(seed)
            boots = v[rng.integers(0, v.size, size=(int(n_boot), v.size))].mean(axis=1)
            lo, hi = (float(x) for x in np.quantile(boots, [(1.0 - level) / 2.0, (1.0 + level) / 2.0]))
        else:
            lo, hi = math.nan, math.nan
        unit_values = v
        out = dict(n=int(v.size), unit="facts",
                   detail=f"the fact is the resampling unit: {n_rel} relation(s), fewer than {int(min_relations)}")
    out.update(estimate=float(v.mean()) if v.size else None, low=lo, high=hi)
    if test:
        out["p"] = _wilcoxon_p(unit_values)
    return out


def _wilcoxon_p(d) -> float | None:
    """Two-sided Wilcoxon signed-rank p of ``d`` against 0 (zeros dropped); None with < 2 nonzero values."""
    from scipy.stats import wilcoxon  # heavy: scipy, not loaded by `import kqlib` or `kq`

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size < 2:
        return None
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
