"""Does the path rule change the verdict? Per query, per fact and for the cheap rankings, on whole facts.

A *setting* is a label ``"riemann-20"``, ``"gauss-8"`` or ``"adaptive"`` (:func:`setting`). Against the
reference (Gauss–Legendre with ``reference_points`` nodes):

* per query (:func:`per_query`): ``error = max |S - S*| / max |S*|`` and the KN-set Jaccard
  (:func:`kqlib.paper.path_points.convergence`); summarised per (model, setting) with intervals that resample
  whole facts (:func:`query_summary`), since the queries of a fact share its neurons;
* per fact (:func:`per_fact`): CS2 of the fact's KN sets and its class (``K_I`` if CS < θ, ``K_C``, or
  ``K_none``, :func:`kqlib.paper.consistency.class_labels`) under each setting; :func:`fact_summary` gives per
  (model, setting) the K_I share, the share of facts whose class differs from the reference's and the mean
  |CS2 - CS2*|, each with a bootstrap interval over facts;
* cheap rankings: :func:`kqlib.paper.path_points.cheap_rankings` (1-point and gauss-4 against the reference),
  summarised like the per-query rows.
"""

from __future__ import annotations

import pandas as pd

from kqlib.attribution import reference_rule
from kqlib.errors import ParameterError
from kqlib.paper.consistency import class_labels, consistency_table
from kqlib.paper.localization import localize
from kqlib.paper.path_points import cheap_rankings, convergence
from kqlib.paper.stats import mean_ci_cluster_table
from kqlib.runs import many

FAMILIES = ("riemann", "gauss")


def setting(label: str, tol: float = 1e-2) -> dict:
    """``"riemann-20"`` -> ``{rule: riemann, steps: 20}``; ``"adaptive"`` -> ``{rule: adaptive, tol: tol}``."""
    if label == "adaptive":
        return dict(rule="adaptive", tol=tol)
    family, _, n = label.partition("-")
    if family not in FAMILIES or not n.isdigit() or int(n) < 1:
        raise ParameterError(f"a path setting is 'adaptive' or RULE-N with RULE in {FAMILIES} and N >= 1 (e.g. "
                             f"'riemann-20'), got {label!r}")
    return dict(rule=family, steps=int(n))


def per_query(lm, queries, labels, *, reference_points: int = 128, tol: float = 1e-2, t: float = 0.2,
              site: str = "post", cache=None, progress: bool = False) -> pd.DataFrame:
    """One row per (query, setting): rule, points, error, jaccard, n_kn, n_kn_reference (+ ``setting``)."""
    specs = [setting(x, tol) for x in labels]
    common = dict(reference_points=reference_points, site=site, t=t, cache=cache, progress=progress, tol=tol)
    frames = []
    for family in FAMILIES:
        counts = sorted({s["steps"] for s in specs if s["rule"] == family})
        if counts:
            frames.append(convergence(lm, queries, counts, [family], **common))
    if any(s["rule"] == "adaptive" for s in specs):
        frames.append(convergence(lm, queries, (), ["adaptive"], **common))
    df = pd.concat(frames, ignore_index=True)
    df["setting"] = [r if r == "adaptive" else f"{r}-{int(p)}" for r, p in zip(df.rule, df.points)]
    return df


def query_summary(df: pd.DataFrame, value: str = "error", by=("model", "setting")) -> pd.DataFrame:
    """Per ``by``: mean of ``value`` with a 95 % interval resampling whole facts, and the median."""
    out = mean_ci_cluster_table(df, list(by), value, ["model", "fact_id"])
    med = df.groupby(list(by))[value].median().rename("median").reset_index()
    return out.merge(med, on=list(by))


def per_fact(lm, queries, labels, *, reference_points: int = 128, tol: float = 1e-2, t: float = 0.2,
             theta: float = 0.3, kind: str = "cs2", site: str = "post", cache=None) -> pd.DataFrame:
    """One row per (fact, setting): ``cs`` (of ``kind``), ``class``, and the reference's ``cs_reference`` and
    ``class_reference``. The reference is the per-query one (:func:`per_query`): Gauss–Legendre
    ``reference_points``, in log(alpha) where the model's layer outputs are normalised
    (:func:`kqlib.attribution.reference_rule`), so its attributions come from the cache."""
    reference = dict(rule=reference_rule(lm), steps=reference_points)
    frames = []
    for label, path in [("reference", reference), *((x, setting(x, tol)) for x in labels)]:
        loc = localize(lm, queries, ["ig"], **path, site=site, t=t, cache=cache, progress=False)
        cs = consistency_table(loc.neurons, queries=loc.queries).dropna(subset=[kind])
        cs = cs.assign(setting=label, cs=cs[kind], **{"class": class_labels(cs[kind], theta, cs.union_size)})
        frames.append(cs[["model", "fact_id", "relation", "setting", "cs", "class"]])
    ref = frames[0].rename(columns={"cs": "cs_reference", "class": "class_reference"}).drop(columns="setting")
    out = pd.concat(frames[1:], ignore_index=True).merge(ref, on=["model", "fact_id", "relation"])
    out["class_changed"] = (out["class"] != out["class_reference"]).astype(float)
    out["cs_abs_diff"] = (out["cs"] - out["cs_reference"]).abs()
    out["is_ki"] = (out["class"] == "K_I").astype(float)
    return out


def fact_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, setting): facts, K_I share, share of facts whose class differs from the reference's, mean
    |CS - CS*|, each with a 95 % bootstrap interval over facts (``<name>_low``, ``<name>_high``)."""
    out = None
    for value in ("is_ki", "class_changed", "cs_abs_diff"):
        t = mean_ci_cluster_table(df, ["model", "setting"], value, ["model", "fact_id"])
        t = t.rename(columns={"mean": value, "ci_low": f"{value}_low", "ci_high": f"{value}_high", "n": "facts"})
        t = t.drop(columns="n_rows")
        out = t if out is None else out.merge(t.drop(columns="facts"), on=["model", "setting"])
    return out.rename(columns={"is_ki": "share_ki", "is_ki_low": "share_ki_low", "is_ki_high": "share_ki_high"})


def cheap_table(lm, queries, labels, *, reference_points: int = 128, site: str = "post", t: float = 0.2,
                cache=None) -> pd.DataFrame:
    """:func:`kqlib.paper.path_points.cheap_rankings` of the fixed-rule ``labels`` (e.g. ``"riemann-1"``)
    against Gauss–Legendre ``reference_points``; one row per (query, setting)."""
    queries = list(queries)
    specs = [setting(x) for x in labels]
    if any(s["rule"] == "adaptive" for s in specs):
        raise ParameterError("cheap rankings are fixed rules (e.g. 'riemann-1', 'gauss-4'), not 'adaptive'")
    ref = many.attribute_many(lm, queries, rule=reference_rule(lm), steps=reference_points, site=site, cache=cache,
                              progress=False)
    df = cheap_rankings(lm, queries, ref, cheap=[(s["rule"], s["steps"]) for s in specs], site=site, t=t,
                        cache=cache, progress=False)
    return df.assign(setting=df["rule"])


def headline(per_query_df: pd.DataFrame, facts_summary: pd.DataFrame, cheap_summary: pd.DataFrame) -> dict:
    """The page's numbers (worst model for each): queries, facts, median error / mean Jaccard and the share of
    facts whose class changes under riemann-20 and adaptive, the 1-point rule's mean Spearman. NaN where a
    setting was not run."""
    nan = float("nan")
    q = per_query_df.groupby(["model", "setting"]).agg(med=("error", "median"), jac=("jaccard", "mean"))
    out = {"n_queries": int(per_query_df.drop_duplicates(["model", "fact_id", "pattern_index"]).shape[0]),
           "n_facts": int(facts_summary.groupby("model").facts.max().sum()) if len(facts_summary) else 0}
    for label, key in (("riemann-20", "riemann20"), ("adaptive", "adaptive")):
        part = q.xs(label, level="setting") if label in q.index.get_level_values("setting") else None
        out[f"{key}_median_error"] = float(part.med.max()) if part is not None else nan
        out[f"{key}_mean_jaccard"] = float(part.jac.min()) if part is not None else nan
        f = facts_summary[facts_summary.setting == label]
        out[f"{key}_class_changed"] = float(f.class_changed.max()) if len(f) else nan
    one = cheap_summary[cheap_summary.setting == "riemann-1"]
    out["one_point_spearman"] = float(one.mean_spearman.min()) if len(one) else nan
    return out
