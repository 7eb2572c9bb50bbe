"""How many path points does IG need? Error and knowledge-neuron agreement of each quadrature rule.

For each query q, rule r (``riemann`` | ``gauss``, :mod:`kqlib.attribution.quadrature`) and number of path
points n, with ``S*`` the scores of a high-order reference integral (Gauss–Legendre, ``reference_points``):

    error(q, r, n)   = max |S_{r,n} - S*| / max |S*|                          (relative max-abs error)
    jaccard(q, r, n) = |N_{r,n} ∩ N*| / |N_{r,n} ∪ N*|,  N = knowledge_neurons(S, t)   (1 when both empty)

``riemann`` with n = 1 is ``a * grad p(a)``, the attribution-patching estimate. ``adaptive`` (error-controlled
to ``tol``) gives one row per query, its ``points`` the mean path points per layer it used.
:func:`cheap_rankings`: Spearman correlation of all neuron scores and KN-set Jaccard of the cheap rules
(1-point = gradient x activation, gauss-4) against a converged reference, per query. :func:`cheapest_as_accurate`
picks the fewest points whose median error is <= that of a baseline setting (default riemann-20, the paper's)
and whose mean Jaccard is >= the baseline's, on every model. Every attribution goes through the cache.
"""

from __future__ import annotations

import pandas as pd

from kqlib.attribution import knowledge_neurons, reference_rule
from kqlib.runs.many import attribute_many

COUNTS = (1, 2, 4, 8, 16, 20, 32)


def jaccard(a: set, b: set) -> float:
    """``|a ∩ b| / |a ∪ b|``; 1.0 when both are empty."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def convergence(lm, queries, counts=COUNTS, rules=("riemann", "gauss"), *, reference_points: int = 64,
                method: str = "ig", site: str = "post", t: float = 0.2, cache=None, progress: bool = True,
                executor: str | None = None, tol: float = 1e-2) -> pd.DataFrame:
    """One row per (model, query, rule, points): ``error``, ``jaccard``, ``n_kn``, ``n_kn_reference``."""
    queries = list(queries)
    common = dict(method=method, site=site, cache=cache, progress=progress, executor=executor)
    ref = attribute_many(lm, queries, steps=reference_points, rule=reference_rule(lm, method),
                         desc=f"{lm.name} reference", **common)
    ref_sets = [knowledge_neurons(s, t) for s in ref]
    rows = []
    for rule in rules:
        for n in ([None] if rule == "adaptive" else counts):
            if rule == "adaptive":
                scores, diags = attribute_many(lm, queries, rule="adaptive", tol=tol, desc=f"{lm.name} adaptive",
                                               diagnostics=True, **common)
                points = [d.total_points / lm.n_layers if d is not None else float("nan") for d in diags]
            else:
                scores = attribute_many(lm, queries, steps=n, rule=rule, desc=f"{lm.name} {rule}-{n}", **common)
                points = [n] * len(queries)
            for q, s, s_ref, kn_ref, pts in zip(queries, scores, ref, ref_sets, points):
                kn = knowledge_neurons(s, t)
                rows.append(dict(model=lm.name, relation=q.relation, fact_id=q.fact_id,
                                 pattern_index=q.pattern_index, rule=rule, points=pts,
                                 error=float((s - s_ref).abs().max() / s_ref.abs().max()),
                                 jaccard=jaccard(kn, kn_ref), n_kn=len(kn), n_kn_reference=len(kn_ref)))
    return pd.DataFrame(rows)


def spearman(a, b) -> float:
    """Spearman rank correlation of two score tensors (flattened; average ranks for ties)."""
    x = pd.Series(a.double().flatten().numpy()).rank()
    y = pd.Series(b.double().flatten().numpy()).rank()
    return float(x.corr(y))


def cheap_rankings(lm, queries, reference, *, cheap=(("riemann", 1), ("gauss", 4)), method: str = "ig",
                   site: str = "post", t: float = 0.2, cache=None, progress: bool = True) -> pd.DataFrame:
    """One row per (query, cheap rule): ``spearman`` and KN-set ``jaccard`` against ``reference`` scores
    ``[n_queries, L, N]`` (a converged attribution, e.g. adaptive or Gauss-128)."""
    queries = list(queries)
    rows = []
    for rule, n in cheap:
        scores = attribute_many(lm, queries, steps=n, rule=rule, method=method, site=site, cache=cache,
                                progress=progress, desc=f"{lm.name} {rule}-{n}")
        for q, s, s_ref in zip(queries, scores, reference):
            rows.append(dict(model=lm.name, relation=q.relation, fact_id=q.fact_id, pattern_index=q.pattern_index,
                             rule=f"{rule}-{n}", spearman=spearman(s, s_ref),
                             jaccard=jaccard(knowledge_neurons(s, t), knowledge_neurons(s_ref, t))))
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, rule, points): median and 90th-percentile error, mean Jaccard, queries (the adaptive rule's
    rows as one group per model, at its mean points per layer)."""
    df = df.copy()
    adaptive = df.rule == "adaptive"
    if adaptive.any():
        df.loc[adaptive, "points"] = df[adaptive].groupby("model").points.transform("mean").round(1)
    g = df.groupby(["model", "rule", "points"])
    return pd.DataFrame({"median_error": g.error.median(), "p90_error": g.error.quantile(0.9),
                         "mean_jaccard": g.jaccard.mean(), "queries": g.size()}).reset_index()


def cheapest_as_accurate(df: pd.DataFrame, baseline: tuple[str, int] = ("riemann", 20)) -> dict | None:
    """The setting with the fewest points that is at least as accurate as ``baseline`` on every model
    (median error <= and mean Jaccard >=); None when none is (the baseline itself always qualifies if
    measured)."""
    table = summary(df)
    base = table[(table.rule == baseline[0]) & (table.points == baseline[1])].set_index("model")
    if base.empty:
        return None
    ok = []
    for (rule, points), part in table.groupby(["rule", "points"]):
        part = part.set_index("model")
        if set(part.index) != set(base.index):
            continue
        if ((part.median_error <= base.median_error.loc[part.index]).all()
                and (part.mean_jaccard >= base.mean_jaccard.loc[part.index]).all()):
            ok.append((int(points), rule != "gauss", rule))
    if not ok:
        return None
    points, _, rule = min(ok)
    return {"rule": rule, "points": points}


def headline(df: pd.DataFrame, baseline: tuple[str, int] = ("riemann", 20)) -> dict:
    """The page's numbers: queries per model, the baseline's worst median error / mean Jaccard over models, the
    cheapest setting at least as accurate, and the summary table as records."""
    table = summary(df)
    at_base = table[(table.rule == baseline[0]) & (table.points == baseline[1])]
    choice = cheapest_as_accurate(df, baseline)
    return {
        "n_models": int(df.model.nunique()),
        "n_queries_per_model": int(df.groupby(["model", "rule", "points"]).size().min()),
        "baseline_median_error": float(at_base.median_error.max()) if len(at_base) else None,
        "baseline_mean_jaccard": float(at_base.mean_jaccard.min()) if len(at_base) else None,
        "cheapest_rule": choice["rule"] if choice else "none",
        "cheapest_points": choice["points"] if choice else 0,
        "summary": [{k: (float(v) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in table.astype(object).to_dict("records")],
    }
