"""Claim 1 measured on the fact, not on k: the chance-corrected summary, CS2 stratified by k, and what knowledge
neurons belong to.

* :func:`chance_summary` -- population mean ``delta_j`` (:mod:`kqlib.paper.chance`) with a two-level bootstrap
  over relations (facts within), and the share of facts not above chance (p_null ≥ α) beside it.
* :func:`power_by_k` -- per k: facts, mean delta_j, share of facts whose per-fact test rejects, and its power
  at the pre-stated shift :data:`kqlib.paper.chance.EFFECT`.
* :func:`reach_table` -- per model × method (and ∩): facts, how many can fall below θ at all
  (:func:`kqlib.paper.consistency.can_reach`), and how many K_I facts "holds" (Wilson lower bound above 1/2)
  would need.
* :func:`ki_by_k` -- the K_I share under CS2 at θ per k; :func:`matched_k` -- each fact's mean CS2 over its
  k0-subsets of phrasings (facts with k < k0 left out and counted).
* :func:`within_stratum_gap` -- a difference of two classes' means taken inside strata (e.g. relations) that
  hold both classes, so that a class confounded with the stratum does not make the difference.
* :func:`pair_types` -- mean KN-set Jaccard of query pairs by type (same fact both answered / not, other fact
  same template, same relation other template, other relation), per-fact means with a bootstrap over facts.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd

from kqlib.paper.chance import jaccard_matrix
from kqlib.paper.consistency import FACT_KEYS, INTERSECTION_METHOD, can_reach, classify, consistency, query_sets
from kqlib.paper.intervals import MIN_RELATIONS, two_level_bootstrap_ci, wilson_ci  # noqa: F401 (re-exported)
from kqlib.paper.stats import bootstrap_ci, cluster_bootstrap_ci

K0 = 4  # the matched k of the CS2 at matched k (θ = 0.3 needs k ≥ 4 to be reachable at all)
PAIR_TYPES = ["same fact, both answered", "same fact, one or both not answered", "other fact, same template",
              "same relation, other template", "other relation"]


def chance_summary(cs: pd.DataFrame, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per model × method and per model over all methods ("all", each fact's delta_j averaged over methods; not
    above chance = under every method): n_facts (with a null), n_undefined, n_relations, mean_delta, ci_low,
    ci_high (two-level bootstrap, relations then facts), share_ki (p_null ≥ α), ki_low, ki_high (same
    bootstrap)."""
    rows = []
    ok = cs.dropna(subset=["delta_j"])
    parts = [(m, k, g) for (m, k), g in ok.groupby(["model", "method"], sort=True)]
    for m, g in ok.groupby("model", sort=True):
        per = g.groupby(["fact_id", "relation"]).agg(delta_j=("delta_j", "mean"),
                                                      ki=("p_null", lambda p: bool((p >= alpha).all())))
        parts.append((m, "all", per.reset_index()))
    for model, method, g in parts:
        ki = (g["ki"] if "ki" in g else g.p_null >= alpha).astype(float).to_numpy()
        rel = g.relation.to_numpy(object)
        lo, hi = two_level_bootstrap_ci(g.delta_j, rel, n_boot=n_boot, seed=seed)
        klo, khi = two_level_bootstrap_ci(ki, rel, n_boot=n_boot, seed=seed)
        n_all = cs[(cs.model == model) & ((cs.method == method) if method != "all" else True)].fact_id.nunique()
        rows.append(dict(model=model, method=method, n_facts=len(g), n_undefined=int(n_all - g.fact_id.nunique()),
                         n_relations=int(pd.Series(rel).nunique()), mean_delta=float(g.delta_j.mean()),
                         ci_low=lo, ci_high=hi, share_ki=float(ki.mean()), ki_low=klo, ki_high=khi))
    return pd.DataFrame(rows, columns=["model", "method", "n_facts", "n_undefined", "n_relations", "mean_delta",
                                       "ci_low", "ci_high", "share_ki", "ki_low", "ki_high"])


def power_by_k(cs: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per model × method × k (templates in the null, ``k_null``): facts, mean delta_j, share with p_null < α,
    mean power of the per-fact test at the pre-stated shift (column ``power`` of the consistency table)."""
    ok = cs.dropna(subset=["delta_j"])
    tab = (ok.assign(rejects=ok.p_null < alpha).groupby(["model", "method", "k_null"])
           .agg(facts=("fact_id", "nunique"), mean_delta=("delta_j", "mean"), share_rejecting=("rejects", "mean"),
                power=("power", "mean")).reset_index())
    return tab.rename(columns={"k_null": "k"})


def needed_for_holds(n: int, null: float = 0.5, level: float = 0.95) -> int | None:
    """The fewest K_I facts of n whose Wilson interval lies above ``null`` (None when even n of n does not)."""
    for k in range(int(n) + 1):
        if wilson_ci(k, n, level)[0] > null:
            return k
    return None


def reach_table(cs: pd.DataFrame, threshold: float, kind: str = "cs2", null: float = 0.5) -> pd.DataFrame:
    """Per model × method and ∩ (facts of every method): n_facts, can_reach (facts that can fall below θ at all),
    n_ki, share_ki, needed (K_I facts a "holds" would need; None when even all would not), measurable
    (can_reach ≥ needed: False means the floor 1/k alone rules "holds" out)."""
    rows = []
    ok = cs.dropna(subset=[kind])
    if "union_size" in ok:
        ok = ok[ok.union_size > 0]
    for model, g in ok.groupby("model", sort=True):
        wide = g.pivot_table(index="fact_id", columns="method", values=kind, aggfunc="first").dropna()
        k = g.drop_duplicates("fact_id").set_index("fact_id").n_queries
        groups = [(m, gm[kind].to_numpy(float), gm.n_queries.to_numpy(float)) for m, gm in g.groupby("method")]
        inter = (np.column_stack([classify(wide[c], threshold) for c in wide.columns]).all(axis=1)
                 if len(wide) else np.array([], dtype=bool))
        for method, values, ks in groups + [(INTERSECTION_METHOD, None, k.loc[wide.index].to_numpy(float))]:
            ki = inter if values is None else classify(values, threshold)
            reach, need = int(can_reach(ks, threshold, kind).sum()), needed_for_holds(len(ks), null)
            rows.append(dict(model=model, method=method, n_facts=len(ks), can_reach=reach, n_ki=int(ki.sum()),
                             share_ki=float(ki.mean()) if ki.size else math.nan, needed=need,
                             measurable=need is None or reach >= need))
    return pd.DataFrame(rows, columns=["model", "method", "n_facts", "can_reach", "n_ki", "share_ki", "needed",
                                       "measurable"])


def ki_by_k(cs: pd.DataFrame, threshold: float, kind: str = "cs2") -> pd.DataFrame:
    """K_I share under ``kind`` at θ per model × method × k (phrasings), with the Wilson interval and whether
    that k can reach θ at all."""
    rows = []
    for (model, method, k), g in cs.dropna(subset=[kind]).groupby(["model", "method", "n_queries"]):
        ki = classify(g[kind], threshold)
        lo, hi = wilson_ci(int(ki.sum()), len(ki))
        rows.append(dict(model=model, method=method, k=int(k), facts=len(ki), share_ki=float(ki.mean()),
                         ci_low=lo, ci_high=hi, can_reach=bool(can_reach([k], threshold, kind)[0])))
    return pd.DataFrame(rows, columns=["model", "method", "k", "facts", "share_ki", "ci_low", "ci_high", "can_reach"])


def matched_k(kn: pd.DataFrame, queries: pd.DataFrame | None = None, k0: int | Mapping = K0, kind: str = "cs2",
              max_subsets: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per fact: the mean ``kind`` over its k0-subsets of phrasings (all of them, or ``max_subsets`` seeded
    ones), so that facts with different k are compared at the same k; NaN for k < k0 (``n_queries`` says).
    ``k0``: one k, or ``{(model, fact_id): k}`` per fact (e.g. its number of answered phrasings; a fact not in
    the mapping gets NaN). The value column is ``f"{kind}_k{k0}"`` for one k, else ``f"{kind}_matched"``."""
    all_q, sets = query_sets(kn, queries)
    rng = np.random.default_rng(seed)
    col = f"{kind}_k{k0}" if isinstance(k0, int) else f"{kind}_matched"
    rows = []
    for fact, g in all_q.groupby(FACT_KEYS, sort=True):
        qs = [sets.get(tuple(r), set()) for r in g[FACT_KEYS + ["pattern_index"]].itertuples(index=False, name=None)]
        k = k0 if isinstance(k0, int) else int(k0.get((fact[0], fact[2]), 0))
        subs = list(combinations(range(len(qs)), k)) if 2 <= k <= len(qs) else []
        if len(subs) > max_subsets:
            subs = [subs[i] for i in rng.choice(len(subs), max_subsets, replace=False)]
        val = float(np.mean([consistency([qs[i] for i in s], kind) for s in subs])) if subs else math.nan
        rows.append({**dict(zip(FACT_KEYS, fact)), "n_queries": len(qs), col: val})
    return pd.DataFrame(rows, columns=FACT_KEYS + ["n_queries", col])


def within_template(kn: pd.DataFrame, queries: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Answered vs unanswered phrasings of the same template: for each query, its mean KN-set Jaccard with the
    other phrasings of its fact; per template (relation, pattern_index) that has both answered and unanswered
    queries, mean(answered) − mean(unanswered); then the mean over those templates with a bootstrap over
    templates. Columns: model, method, templates, diff, ci_low, ci_high, mean_answered, mean_unanswered."""
    all_q, sets = query_sets(kn, queries)
    flags = queries.drop_duplicates(FACT_KEYS + ["pattern_index"]).set_index(FACT_KEYS + ["pattern_index"])["correct"]
    rows = []
    for (model, method), g in all_q.groupby(["model", "method"], sort=True):
        per_q = []
        for fact, gf in g.groupby("fact_id"):
            keys = [tuple(r) for r in gf[FACT_KEYS + ["pattern_index"]].itertuples(index=False, name=None)]
            if len(keys) < 2:
                continue
            jm = jaccard_matrix([sets.get(k, set()) for k in keys])
            for i, (k, rel) in enumerate(zip(keys, gf.relation)):
                per_q.append(dict(template=(rel, k[3]), answered=bool(flags.get(k, False)),
                                  j=float((jm[i].sum() - jm[i, i]) / (len(keys) - 1))))
        d = pd.DataFrame(per_q, columns=["template", "answered", "j"])
        by = d.groupby(["template", "answered"]).j.mean().unstack() if len(d) else pd.DataFrame()
        both = by.dropna() if {True, False} <= set(by.columns) else pd.DataFrame(columns=[True, False])
        diff = (both[True] - both[False]).to_numpy(float) if len(both) else np.array([])
        lo, hi = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
        rows.append(dict(model=model, method=method, templates=int(diff.size),
                         diff=float(diff.mean()) if diff.size else math.nan, ci_low=lo, ci_high=hi,
                         mean_answered=float(both[True].mean()) if len(both) else math.nan,
                         mean_unanswered=float(both[False].mean()) if len(both) else math.nan))
    return pd.DataFrame(rows, columns=["model", "method", "templates", "diff", "ci_low", "ci_high", "mean_answered",
                                       "mean_unanswered"])


def within_stratum_gap(values, labels, strata, a: str, b: str, clusters=None, n_boot: int = 2000,
                       seed: int = 0, stratum_name: str = "stratum", unit_name: str = "unit") -> dict:
    """Difference of class means within strata: for every stratum s holding units of both classes,
    d_s = mean(values | s, a) − mean(values | s, b); estimate = mean over s of d_s, with a percentile bootstrap
    resampling ``clusters`` of strata (default: the strata; e.g. the relation when a stratum is (model,
    relation), so a relation's strata are drawn together); n = clusters. Returns dict(estimate, low, high, n,
    n_strata, n_a, n_b, strata = frame of [stratum, cluster, mean_a, mean_b, d]) or dict(why_not=...) when a
    class has no unit or no stratum holds both ("the class is confounded with the stratum"); the reasons name
    strata and units ``stratum_name`` and ``unit_name``."""
    d = pd.DataFrame({"v": np.asarray(values, dtype=np.float64).reshape(-1),
                      "label": np.asarray(labels, dtype=object).reshape(-1),
                      "stratum": pd.Series(list(strata), dtype=object).to_numpy(),
                      "cluster": pd.Series(list(strata if clusters is None else clusters), dtype=object).to_numpy()})
    d = d[np.isfinite(d.v) & d.label.isin([a, b])]
    n_a, n_b = int((d.label == a).sum()), int((d.label == b).sum())
    if not n_a or not n_b:
        return dict(why_not=f"a class has no {unit_name} ({n_a} {a}, {n_b} {b})", n_a=n_a, n_b=n_b)
    means = d.groupby(["stratum", "label"]).v.mean().unstack()
    both = means.dropna() if {a, b} <= set(means.columns) else means.iloc[:0]
    if not len(both):
        return dict(why_not=f"no {stratum_name} holds both classes ({n_a} {a}, {n_b} {b} in {d.stratum.nunique()} "
                            f"{stratum_name}(s): the class is confounded with the {stratum_name})", n_a=n_a, n_b=n_b)
    cl = d.drop_duplicates("stratum").set_index("stratum").cluster
    tab = pd.DataFrame({"stratum": both.index, "cluster": cl.loc[both.index].to_numpy(),
                        "mean_a": both[a].to_numpy(float), "mean_b": both[b].to_numpy(float)})
    tab["d"] = tab.mean_a - tab.mean_b
    lo, hi = cluster_bootstrap_ci(tab.d, tab.cluster.astype(str), n_boot=n_boot, seed=seed)
    return dict(estimate=float(tab.d.mean()), low=lo, high=hi, n=int(tab.cluster.nunique()),
                n_strata=int(len(tab)), n_a=n_a, n_b=n_b, strata=tab)


def pair_types(kn: pd.DataFrame, queries: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean KN-set Jaccard by pair type per model × method. ``queries``: one row per query with [model, method,
    relation, fact_id, pattern_index, correct] (``correct``: answered top-1). Each fact's pairs of a type are
    averaged first (a pair counts for both its facts), then the facts: mean with a percentile bootstrap over
    facts (the fact is the cluster). Columns: model, method, pair_type, facts, pairs, mean, ci_low, ci_high."""
    all_q, sets = query_sets(kn, queries)
    flags = queries.drop_duplicates(FACT_KEYS + ["pattern_index"]).set_index(FACT_KEYS + ["pattern_index"])["correct"]
    rows = []
    for (model, method), g in all_q.groupby(["model", "method"], sort=True):
        keys = [tuple(r) for r in g[FACT_KEYS + ["pattern_index"]].itertuples(index=False, name=None)]
        jm = jaccard_matrix([sets.get(k, set()) for k in keys])
        rel = g.relation.to_numpy(object)
        fact = g.fact_id.to_numpy(object)
        tmpl = g.pattern_index.to_numpy()
        ans = np.array([bool(flags.get(k, False)) for k in keys])
        i, j = np.triu_indices(len(keys), 1)
        same_f, same_r, same_t = fact[i] == fact[j], rel[i] == rel[j], tmpl[i] == tmpl[j]
        kind = np.select([same_f & ans[i] & ans[j], same_f, same_r & same_t, same_r], PAIR_TYPES[:4], PAIR_TYPES[4])
        pairs = pd.DataFrame({"a": fact[i], "b": fact[j], "type": kind, "j": jm[i, j]})
        both = pd.concat([pairs.rename(columns={"a": "fact"}).drop(columns="b"),
                          pairs[pairs.a != pairs.b].rename(columns={"b": "fact"}).drop(columns="a")])
        per_fact = both.groupby(["type", "fact"]).j.mean()
        for t in PAIR_TYPES:
            vals = per_fact.loc[t].to_numpy(float) if t in per_fact.index.get_level_values(0) else np.array([])
            lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
            rows.append(dict(model=model, method=method, pair_type=t, facts=int(vals.size),
                             pairs=int((pairs.type == t).sum()), mean=float(vals.mean()) if vals.size else math.nan,
                             ci_low=lo, ci_high=hi))
    return pd.DataFrame(rows, columns=["model", "method", "pair_type", "facts", "pairs", "mean", "ci_low", "ci_high"])
