"""Consistency of knowledge-neuron sets across the neighbor queries of a fact (paper §2.4, §2.8).

A fact with queries q_1..q_k has per-query KN sets N_i = N_{q_i}; U = ∪_i N_i and c(n) = #{i : n ∈ N_i}.

* ``cs1``  strict Jaccard over all queries:   CS1 = |∩_i N_i| / |U|
* ``cs2``  soft, frequency-weighted:          CS2 = (1/|U|) Σ_{n∈U} c(n)/k
* ``mean_pairwise_jaccard`` (alternative reading of CS2):  2/(k(k-1)) Σ_{i<j} |N_i ∩ N_j| / |N_i ∪ N_j|

All three are 1.0 for identical non-empty sets and lie in [0, 1]. A fact is *inconsistent* (K_I) iff CS < θ,
with θ static (0.3, the paper's example) or Otsu's threshold of the CS histogram of one model × method.

The Consistency-Aware Score of a neuron over the k queries of a fact (Eq. 7):
CAS(n) = β1·μ_n − β2·σ_n, μ_n and σ_n (population std) of the per-query normalised scores a_n(q_i).

Typical use::

    cs = consistency_table(loc.neurons, queries=loc.queries)    # one row per (model, method, fact)
    shares = ki_share_table(cs, kind="cs2", static=0.3, otsu=True)
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kqlib.errors import ParameterError
from kqlib.paper.chance import CHANCE_COLUMNS, N_DRAWS, chance_table
from kqlib.paper.stats import (WelchResult, welch_t, bootstrap_ci, cluster_bootstrap_ci, otsu_threshold,  # noqa: F401
                              wilson_ci)  # (re-exported)

CS_KINDS = ("cs1", "cs2", "pairwise")
INTERSECTION_METHOD = "∩"  # the method label of the "inconsistent under all methods" rows

# ------------------------------------------------------------------------------------ set scores


def _as_sets(sets: Sequence[Iterable]) -> list[set]:
    if isinstance(sets, (set, frozenset, str)):
        raise ParameterError("pass a sequence of KN sets, one per query (e.g. a list of sets of (layer, neuron))")
    out = [set(s) for s in sets]
    if len(out) < 2:
        raise ParameterError(f"a consistency score needs the KN sets of at least 2 queries, got {len(out)}")
    return out


def cs1(sets: Sequence[set]) -> float:
    """CS1 = |∩_i N_i| / |∪_i N_i| (strict Jaccard over all k ≥ 2 queries). 0.0 when the union is empty
    (no query has a knowledge neuron: there is nothing shared to call consistent)."""
    sets = _as_sets(sets)
    union = set().union(*sets)
    if not union:
        return 0.0
    return len(set.intersection(*map(set, sets))) / len(union)


def cs2(sets: Sequence[set]) -> float:
    """CS2 = (1/|U|) Σ_{n∈U} c(n)/k with U = ∪_i N_i, c(n) = #{i : n ∈ N_i} (soft, frequency-weighted).

    Identical sets -> 1; pairwise disjoint sets -> 1/k; 0.0 when the union is empty."""
    sets = _as_sets(sets)
    union = set().union(*sets)
    if not union:
        return 0.0
    total = sum(len(s) for s in sets)  # = Σ_{n∈U} c(n)
    return total / (len(sets) * len(union))


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def mean_pairwise_jaccard(sets: Sequence[set]) -> float:
    """2/(k(k-1)) Σ_{i<j} J(N_i, N_j), with J(∅, ∅) = 0.0 (the alternative reading of CS2)."""
    sets = _as_sets(sets)
    pairs = [jaccard(a, b) for a, b in combinations(sets, 2)]
    return float(sum(pairs) / len(pairs))


_SCORES: dict[str, Callable[[Sequence[set]], float]] = {
    "cs1": cs1,
    "cs2": cs2,
    "pairwise": mean_pairwise_jaccard,
}


def consistency(sets: Sequence[set], kind: str = "cs2") -> float:
    """The consistency score ``kind`` ("cs1" | "cs2" | "pairwise") of the KN sets of one fact's queries."""
    if kind not in _SCORES:
        raise ParameterError(f"unknown consistency kind {kind!r}; choose one of {', '.join(CS_KINDS)}")
    return _SCORES[kind](sets)


# ------------------------------------------------------------------------------ thresholds, stats


def classify(cs_values, threshold: float) -> np.ndarray:
    """Boolean array, True = inconsistent (K_I): CS < threshold; False = consistent (K_C). The book's one
    K_C / K_I rule: every table, claim and figure classifies through this function (or :func:`class_labels`)."""
    arr = np.asarray(cs_values, dtype=np.float64)
    if np.isnan(arr).any():
        raise ParameterError("cs_values contains NaN (facts with fewer than 2 queries?); drop them first")
    if math.isfinite(float(threshold)) and not 0.0 <= float(threshold) <= 1.0:
        raise ParameterError(f"the consistency threshold θ must lie in [0, 1] (scores do), got {threshold}")
    return arr < float(threshold)


def can_reach(n_queries, threshold: float, kind: str = "cs2") -> np.ndarray:
    """Per fact: can its score fall below θ at all? CS2 ≥ 1/k (k = n_queries) whenever some query has a KN,
    so a fact can be K_I under CS2 only if 1/k < θ (θ = 0.3: k ≥ 4); CS1 and pairwise Jaccard reach 0."""
    k = np.asarray(n_queries, dtype=np.float64)
    return 1.0 / k < float(threshold) if kind == "cs2" else np.ones(k.shape, dtype=bool)


K_NONE = "K_none"  # a fact none of whose queries has a knowledge neuron: neither consistent nor inconsistent


def class_labels(cs_values, threshold: float, union_size=None) -> np.ndarray:
    """``"K_I"`` (CS < θ), ``"K_C"`` (CS ≥ θ) or ``"K_none"`` per fact. ``union_size`` (the size of the union
    of the fact's KN sets, :func:`consistency_table`): a fact whose union is empty has no knowledge neuron on
    any query; its CS is 0 by convention, but it is not evidence of inconsistency, so it gets its own class."""
    ki = classify(cs_values, threshold)
    out = np.where(ki, "K_I", "K_C").astype(object)
    if union_size is not None:
        none = np.asarray(union_size, dtype=np.float64).reshape(-1) == 0
        out[none] = K_NONE
    return out


def share_inconsistent(cs_values, threshold: float) -> float:
    """Fraction of facts with CS < threshold (share of K_I); NaN for no facts."""
    ki = classify(cs_values, threshold)
    return float(ki.mean()) if ki.size else math.nan



# ---------------------------------------------------------------------------------------- tables

FACT_KEYS = ["model", "method", "fact_id"]
KN_COLUMNS = ["model", "method", "fact_id", "pattern_index", "layer", "neuron"]


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(f"{what} lacks column(s) {missing}; it has {list(df.columns)}")


def query_sets(kn: pd.DataFrame, queries: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[tuple, set]]:
    """Every (model, method, fact_id, pattern_index) query (+ relation when known) and its KN set
    ``{(model, method, fact_id, pattern_index): {(layer, neuron), ...}}`` (absent key = empty set); ``kn`` and
    ``queries`` as in :func:`consistency_table`."""
    _require(kn, KN_COLUMNS, "the KN frame")
    qkey = FACT_KEYS + ["pattern_index"]
    cols = qkey + (["relation"] if "relation" in kn.columns else [])
    all_q = kn[cols].drop_duplicates(qkey)
    if queries is not None:
        _require(queries, ["fact_id", "pattern_index"], "the queries frame")
        q = queries.copy()
        for col in ("model", "method"):
            if col not in q.columns:
                q = q.merge(kn[[col]].drop_duplicates(), how="cross")
        q = q[qkey + (["relation"] if "relation" in q.columns else [])]
        all_q = pd.concat([q, all_q], ignore_index=True).drop_duplicates(qkey)
    present = kn.dropna(subset=["layer", "neuron"])
    neurons: dict[tuple, set] = {}
    for key, layer, neuron in zip(zip(*(present[c] for c in qkey)), present["layer"].astype(int),
                                  present["neuron"].astype(int)):
        neurons.setdefault(key, set()).add((layer, neuron))
    return all_q, neurons


def consistency_table(kn: pd.DataFrame, queries: pd.DataFrame | None = None, min_queries: int = 2,
                      n_null: int = N_DRAWS, seed: int = 0) -> pd.DataFrame:
    """Per-fact consistency scores from a tidy knowledge-neuron frame.

    ``kn``: one row per knowledge neuron, columns [model, method, fact_id, pattern_index, layer, neuron]
    (+ relation). A row with NaN layer/neuron marks a query without KNs. ``queries``: optional frame listing
    every query ([fact_id, pattern_index] + any of model, method, relation; a missing model/method column
    means "for every model/method in ``kn``"), so that queries with an empty KN set count.

    Returns one row per (model, method, fact_id) [+ relation]: n_queries, mean_set_size, union_size,
    intersection_size, cs1, cs2, pairwise. Facts with fewer than ``min_queries`` (≥ 2) queries get NaN scores.
    With a relation column, also the chance-corrected consistency of :func:`kqlib.paper.chance.chance_table`
    (``delta_j``, ``p_null``, ``null_reason``, ...; ``n_null`` seeded pseudo-facts per fact, 0 = not computed).
    """
    if min_queries < 2:
        raise ParameterError(f"min_queries must be >= 2, got {min_queries}")
    has_rel = "relation" in kn.columns or (queries is not None and "relation" in queries.columns)
    qkey = FACT_KEYS + ["pattern_index"]
    all_q, neurons = query_sets(kn, queries)

    rows = []
    for fact, group in all_q.groupby(FACT_KEYS, sort=True):
        keys = [tuple(k) for k in group[qkey].itertuples(index=False, name=None)]
        sets = [neurons.get(k, set()) for k in keys]
        row = dict(zip(FACT_KEYS, fact))
        if has_rel:
            rel = group["relation"].dropna() if "relation" in group else pd.Series(dtype=object)
            row["relation"] = rel.iloc[0] if len(rel) else None
        union = set().union(*sets)
        row.update(
            n_queries=len(sets),
            mean_set_size=float(np.mean([len(s) for s in sets])),
            union_size=len(union),
            intersection_size=len(set.intersection(*sets)) if sets else 0,
        )
        for kind in CS_KINDS:
            row[kind] = consistency(sets, kind) if len(sets) >= min_queries else math.nan
        rows.append(row)
    out_cols = FACT_KEYS + (["relation"] if has_rel else []) + [
        "n_queries", "mean_set_size", "union_size", "intersection_size", *CS_KINDS]
    out = pd.DataFrame(rows, columns=out_cols)
    if has_rel and int(n_null) > 0 and len(out):
        null = chance_table(all_q.merge(out[FACT_KEYS + ["relation"]], on=FACT_KEYS, suffixes=("_q", "")),
                            neurons, n_draws=n_null, seed=seed)
        return out.merge(null, on=FACT_KEYS, how="left")
    why = "no relation column" if not has_rel else "not computed (n_null = 0)"
    return out.assign(**{c: (why if c == "null_reason" else math.nan) for c in CHANCE_COLUMNS})


def _threshold_specs(values: np.ndarray, static, otsu: bool, bins: int) -> list[tuple[str, float]]:
    specs = []
    if static is not None:
        for s in np.atleast_1d(np.asarray(static, dtype=np.float64)):
            specs.append(("static", float(s)))
    if otsu:
        specs.append(("otsu", otsu_threshold(values, bins) if values.size else math.nan))
    return specs


def ki_share_table(cs_df: pd.DataFrame, kind: str = "cs2", static: float | Sequence[float] | None = 0.3,
                   otsu: bool = True, bins: int = 256, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> pd.DataFrame:
    """Share of inconsistent facts (K_I: CS < θ) per (model, method, threshold), the paper's Table 1.

    ``cs_df`` from :func:`consistency_table`; facts with NaN CS are dropped. θ: each value of ``static`` and, if
    ``otsu``, Otsu's threshold of that model × method's CS values. Columns: model, method, kind,
    threshold_kind, threshold, n_facts, n_ki, n_none, share_ki, ci_low, ci_high, ci_method, mean_cs_kc,
    mean_cs_ki, welch_t, welch_p, note. Row method "∩" per model and threshold: share of facts inconsistent
    under ALL methods (each with its own θ), over the facts present for every method (no Welch test).

    The unit is the fact. Facts without any knowledge neuron (``union_size`` 0, when the column is there) are
    class ``K_none``: counted in ``n_none``, excluded from n_facts, the share and Otsu's histogram. CIs: the
    Wilson interval for a static θ (it does not collapse at 0/n or n/n); for Otsu's θ a percentile bootstrap
    over facts that re-estimates θ in every resample (θ is itself estimated from the same facts).
    """
    if kind not in CS_KINDS:
        raise ParameterError(f"unknown consistency kind {kind!r}; choose one of {', '.join(CS_KINDS)}")
    _require(cs_df, ["model", "method", "fact_id", kind], "the consistency table")
    if static is None and not otsu:
        raise ParameterError("choose at least one threshold: static=<value(s)> and/or otsu=True")

    df = cs_df.dropna(subset=[kind])
    fact_cols = ["fact_id"] + (["relation"] if "relation" in df.columns else [])
    has_union = "union_size" in df.columns
    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2.0

    def otsu_boot(value_sets: list[np.ndarray]) -> tuple[float, float]:
        """Percentile CI of the share K_I under ALL of the given methods' Otsu θ, θ re-estimated from each
        resample of the facts (the same facts resampled for every method)."""
        n = value_sets[0].size
        if n == 0:
            return (math.nan, math.nan)
        idx = rng.integers(0, n, size=(int(n_boot), n))
        shares = np.empty(int(n_boot))
        for b in range(int(n_boot)):
            flags = np.ones(n, dtype=bool)
            for values in value_sets:
                v = values[idx[b]]
                flags &= v < otsu_threshold(v, bins)
            shares[b] = flags.mean()
        lo, hi = np.quantile(shares, [alpha, 1.0 - alpha])
        return (float(lo), float(hi))

    rows = []
    for model, mdf in df.groupby("model", sort=True):
        methods = sorted(mdf["method"].unique())
        flags: dict[tuple[str, float, str], pd.Series] = {}  # (threshold_kind, static value, method) -> K_I
        vals: dict[str, pd.Series] = {}
        spec_order: list[tuple[str, float]] = []
        n_none_by_method = {}
        for method in methods:
            g = mdf[mdf["method"] == method]
            none = (g["union_size"].to_numpy(np.float64) == 0) if has_union else np.zeros(len(g), dtype=bool)
            n_none_by_method[method] = int(none.sum())
            g = g[~none]
            values = g[kind].to_numpy(np.float64)
            index = pd.MultiIndex.from_frame(g[fact_cols]) if len(fact_cols) > 1 else pd.Index(g["fact_id"])
            vals[method] = pd.Series(values, index=index)
            for i, (tkind, theta) in enumerate(_threshold_specs(values, static, otsu, bins)):
                ki = classify(values, theta)
                welch = welch_t(values[~ki], values[ki])
                if tkind == "static":
                    lo, hi = wilson_ci(int(ki.sum()), int(values.size), level)
                else:
                    lo, hi = otsu_boot([values])
                rows.append(dict(
                    model=model, method=method, kind=kind, threshold_kind=tkind, threshold=theta,
                    n_facts=int(values.size), n_ki=int(ki.sum()), n_none=n_none_by_method[method],
                    share_ki=float(ki.mean()) if values.size else math.nan,
                    ci_low=lo, ci_high=hi, ci_method="Wilson" if tkind == "static" else "bootstrap, θ re-estimated",
                    mean_cs_kc=float(values[~ki].mean()) if (~ki).any() else math.nan,
                    mean_cs_ki=float(values[ki].mean()) if ki.any() else math.nan,
                    welch_t=welch.t, welch_p=welch.p, note=welch.note,
                ))
                spec = (tkind, theta if tkind == "static" else math.nan, i)
                if method == methods[0]:
                    spec_order.append(spec)
                flags[(spec[0], spec[2], method)] = pd.Series(ki, index=index)
        for tkind, theta, i in spec_order:
            series = [flags[(tkind, i, m)] for m in methods]
            common = series[0].index
            for s_ in series[1:]:
                common = common.intersection(s_.index)
            all_ki = np.ones(len(common), dtype=bool)
            for s_ in series:
                all_ki &= s_.loc[common].to_numpy(bool)
            if tkind == "static":
                lo, hi = wilson_ci(int(all_ki.sum()), int(len(common)), level)
            else:
                lo, hi = otsu_boot([vals[m].loc[common].to_numpy(np.float64) for m in methods])
            rows.append(dict(
                model=model, method=INTERSECTION_METHOD, kind=kind, threshold_kind=tkind, threshold=theta,
                n_facts=int(len(common)), n_ki=int(all_ki.sum()), n_none=max(n_none_by_method.values()),
                share_ki=float(all_ki.mean()) if len(common) else math.nan, ci_low=lo, ci_high=hi,
                ci_method="Wilson" if tkind == "static" else "bootstrap, θ re-estimated",
                mean_cs_kc=math.nan, mean_cs_ki=math.nan, welch_t=math.nan, welch_p=math.nan,
                note=f"inconsistent under all of {methods}" + ("" if tkind == "static" else " (per-method Otsu θ)"),
            ))
    cols = ["model", "method", "kind", "threshold_kind", "threshold", "n_facts", "n_ki", "n_none", "share_ki",
            "ci_low", "ci_high", "ci_method", "mean_cs_kc", "mean_cs_ki", "welch_t", "welch_p", "note"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------- chapter tables (Table 1)


def ordered_shares(shares: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """:func:`ki_share_table` rows sorted by model, threshold kind and method (the methods' order, ∩ last)."""
    out = shares.copy()
    out["method"] = pd.Categorical(out["method"], list(methods) + [INTERSECTION_METHOD], ordered=True)
    return out.sort_values(["model", "threshold_kind", "method"]).reset_index(drop=True)


def table1(shares: pd.DataFrame) -> pd.DataFrame:
    """Table 1: "share [95 % CI] (n=…)" per (model, threshold kind) × method (facts are the unit)."""
    def cell(r):
        if not np.isfinite(r.share_ki):
            return "–"
        none = f", {r.n_none} K_none" if getattr(r, "n_none", 0) else ""
        return f"{r.share_ki:.0%} [{r.ci_low:.0%}, {r.ci_high:.0%}] (n={r.n_facts}{none})"

    tab = (shares.assign(cell=shares.apply(cell, axis=1))
           .pivot_table(index=["model", "threshold_kind"], columns="method", values="cell", aggfunc="first",
                        observed=True))
    tab.columns.name = "K_I share by method"
    return tab


def theta_table(shares: pd.DataFrame) -> pd.DataFrame:
    """θ (static and Otsu) per model × method."""
    tab = (shares[shares.method != INTERSECTION_METHOD]
           .pivot_table(index=["model", "method"], columns="threshold_kind", values="threshold", observed=True))
    tab.columns = [f"θ ({c})" for c in tab.columns]
    return tab.round(3)


def welch_table(shares: pd.DataFrame):
    """The Welch tests of :func:`ki_share_table`, styled (p empty with the reason when undefined)."""
    cols = ["model", "method", "threshold_kind", "threshold", "n_facts", "n_ki", "mean_cs_kc", "mean_cs_ki",
            "welch_t", "welch_p", "note"]
    w = shares[shares.method != INTERSECTION_METHOD][cols].reset_index(drop=True)
    return w.style.format({"threshold": "{:.3f}", "mean_cs_kc": "{:.3f}", "mean_cs_ki": "{:.3f}",
                           "welch_t": "{:.2f}", "welch_p": "{:.2e}"}, na_rep="").hide(axis="index")


def thetas(shares: pd.DataFrame) -> pd.Series:
    """θ indexed by (model, method, threshold_kind)."""
    return shares.set_index(["model", "method", "threshold_kind"])["threshold"]


def per_relation_table(cs: pd.DataFrame, shares: pd.DataFrame, kind: str = "cs2") -> pd.DataFrame:
    """K_I share of each relation's facts at the static and at Otsu's θ (the θ of the whole model × method)."""
    theta = thetas(shares)
    rows = []
    for (model, method, rel), g in cs.groupby(["model", "method", "relation"]):
        row = dict(model=model, method=method, relation=rel, facts=len(g), queries_per_fact=g.n_queries.mean(),
                   mean_cs=g[kind].mean())
        for tk in ("static", "otsu"):
            row[f"K_I ({tk})"] = share_inconsistent(g[kind], theta[(model, method, tk)])
        rows.append(row)
    return pd.DataFrame(rows)


def welch_claim(shares: pd.DataFrame, model: str) -> dict:
    """The Welch claim's measurement for one model: the largest defined p over methods × thresholds, the
    smallest mean-CS difference K_C − K_I as the effect, the fewest facts as n; ``why_not`` when no test is
    defined."""
    part = shares[(shares.model == model) & (shares.method != INTERSECTION_METHOD)]
    ok = part[np.isfinite(part.welch_p.astype(float))]
    if not len(ok):
        return dict(why_not="Welch's test is undefined for every group (a class has fewer than 2 facts)")
    worst = ok.loc[ok.welch_p.astype(float).idxmax()]
    return dict(estimate=float((ok.mean_cs_kc - ok.mean_cs_ki).min()), p=float(worst.welch_p),
                n=int(ok.n_facts.min()), detail=f"{len(ok)} of {len(part)} tests defined")


# ---------------------------------------------------------------------- chapter 02 (distributions)


def floor_table(cs: pd.DataFrame, kind: str = "cs2", threshold: float = 0.3) -> pd.DataFrame:
    """Per model × relation: facts, queries per fact, mean CS, share below θ and the CS2 floor 1/k."""
    tab = (cs.groupby(["model", "relation"])
           .agg(facts=("fact_id", "nunique"), queries_per_fact=("n_queries", "mean"), mean_cs=(kind, "mean"),
                below_theta=(kind, lambda v: share_inconsistent(v, threshold)),
                can_reach_theta=("n_queries", lambda k: int(can_reach(k, threshold, kind).sum()))))
    tab["CS2 floor 1/k"] = 1 / tab["queries_per_fact"]
    return tab


def class_label_series(cs: pd.DataFrame, theta: Mapping[tuple[str, str], float] | float, kind: str = "cs2") -> pd.Series:
    """K_C / K_I / K_none per row of a consistency table; ``theta`` one value or one per (model, method)."""
    out = pd.Series(index=cs.index, dtype=object)
    for (model, method), g in cs.groupby(["model", "method"]):
        th = theta[(model, method)] if isinstance(theta, Mapping) else theta
        out.loc[g.index] = class_labels(g[kind], th, g["union_size"] if "union_size" in g else None)
    return out
