"""Chapter 03 (query-KN mapping, paper §4.1): the facts' classes, the intervention runs of the chapter, their
summary tables, Figure 4 and the chapter's numbers and claims.

The computations (the conditions, one intervention, the queries of a localization) live in
:mod:`kqlib.paper.mapping`; this module arranges them for the notebook ``book/03_query_kn_mapping.py``, which
imports it and :class:`~kqlib.book.chapter.Chapter` only.
"""

from __future__ import annotations

import random
import time
from typing import Any, Sequence

import matplotlib.pyplot as plt  # heavy, but this module draws Figure 4
import numpy as np
import pandas as pd
import seaborn as sns

from kqlib.errors import TooFewFacts
from kqlib.paper.consistency import class_label_series as class_labels
from kqlib.paper.consistency import otsu_threshold
from kqlib.paper.intervals import unit_interval
from kqlib.paper.mapping import CONDITIONS, MAPPING_COLUMNS, OPS, UNIT, mapping_queries, per_fact_effects, run_mapping
from kqlib.paper.stats import ci_cell, finite_or_none, fmt, mean_ci_cluster_table, paired_fact_table, with_average
from kqlib.book.report import records  # noqa: F401 (the notebook's K.records)
from kqlib.book.claims.verdicts import measurement


def classify_facts(cs: pd.DataFrame, *, cs_kind: str, static_threshold: float, threshold_kind: str) -> pd.DataFrame:
    """``cs`` with ``theta`` (static, or Otsu per model × method, ``threshold_kind``) and ``group``
    (K_C / K_I / K_none)."""

    thetas = {}
    for (model, method), g in cs.groupby(["model", "method"]):
        vals = g[g.union_size > 0][cs_kind].to_numpy(float)
        thetas[(model, method)] = (static_threshold if threshold_kind == "static" or not vals.size
                                   else otsu_threshold(vals))
    out = cs.copy()
    out["theta"] = [thetas[(m, k)] for m, k in zip(out.model, out.method)]
    out["group"] = class_labels(out, thetas, cs_kind)
    return out


def run_chapter_mapping(lms, data, cs: pd.DataFrame, *, methods: Sequence[str], max_queries: int,
                        enhance_factor: float, site: str, seed: int) -> pd.DataFrame:
    """Every query of a K_C / K_I fact (at most ``max_queries`` per model × method × class, a seeded
    sample), all conditions, suppress (→ 0) and enhance (× ``enhance_factor``)."""

    operations = {"suppress": 0.0, "enhance": float(enhance_factor)}
    groups = cs.set_index(["model", "method", "fact_id"])["group"]
    frames = []
    for lm in lms:
        for method in methods:
            qs, meta = mapping_queries(data.locs[lm.name], method, model=lm.name)
            for m in meta:
                m["group"] = groups.get((lm.name, method, m["fact_id"]), None)
            for group in ("K_C", "K_I"):
                idx = [i for i, m in enumerate(meta) if m["group"] == group]
                rng = random.Random(f"{seed}-{lm.name}-{method}-{group}")
                if max_queries and len(idx) > max_queries:
                    idx = [idx[i] for i in sorted(rng.sample(range(len(idx)), max_queries))]
                t0 = time.time()
                if idx:
                    frames.append(run_mapping(lm, [qs[i] for i in idx], site=site, seed=seed,
                                              operations=operations, meta=[meta[i] for i in idx],
                                              desc=f"interventions {lm.name} {method} {group}"))
                print(f"{lm.name} {method} {group}: {len(idx)} queries in {time.time() - t0:.1f} s")
    if not frames:  # nothing to intervene on: a clear stop, not empty tables downstream
        counts = ", ".join(f"{m}: {n}" for m, n in cs.groupby("group").size().items()) or "no fact"
        raise TooFewFacts(f"no query of a K_C or K_I fact has knowledge neurons (facts per class over the models and "
                          f"methods: {counts}): there is no query-KN mapping to measure. Rerun with more facts "
                          f"(-p n_facts_per_relation=...) or relations the model answers (kq data --model NAME).")
    return pd.concat(frames, ignore_index=True)


def set_sizes(mapping: pd.DataFrame) -> pd.DataFrame:
    return (mapping[mapping.operation == "suppress"]
            .groupby(["model", "method", "group", "condition"])
            .agg(queries=("n_neurons", "size"), mean_neurons=("n_neurons", "mean"),
                 empty_share=("n_neurons", lambda s: float((s == 0).mean())))
            .round(2))


def with_avg(mapping: pd.DataFrame) -> pd.DataFrame:
    """Rows plus the "average" operation = (|ΔProb_suppress| + |ΔProb_enhance|) / 2 per query and condition."""

    return with_average(mapping, unit=UNIT + ["group", "condition"], column="operation", value="d_prob")


def summary_table(long: pd.DataFrame, mapping: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean ΔProb per (model, method, group, condition, operation), pooled over queries, with a 95 % cluster-
    bootstrap CI over FACTS (n = facts, n_rows = queries), and the top-1 flip rate."""

    keys = ["model", "method", "group", "condition", "operation"]
    summary = mean_ci_cluster_table(long, keys, "d_prob", cluster=["fact_id"], n_boot=n_boot, seed=seed)
    flips = mapping.groupby(keys)["flipped"].mean().rename("flip_rate").reset_index()
    return summary.merge(flips, how="left", on=keys)


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    cell = summary.apply(lambda r: "–" if not np.isfinite(r["mean"]) else
                         f"{r['mean']:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]", axis=1)
    return (summary.assign(cell=cell)
            .pivot_table(index=["model", "method", "group", "condition"], columns="operation", values="cell",
                         aggfunc="first")[OPS])


def fig4(summary: pd.DataFrame, models, method: str):
    """Bars of mean ΔProb per condition (suppress, enhance, Avg) with CI error bars, K_C and K_I rows."""

    palette = sns.color_palette("deep", 3)
    conds = list(CONDITIONS)
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 7), squeeze=False, sharey=False)
    for col, model in enumerate(models):
        for row, group in enumerate(("K_C", "K_I")):
            ax = axes[row, col]
            part = summary[(summary.model == model) & (summary.method == method) & (summary.group == group)]
            width = 0.8 / len(OPS)
            for j, op in enumerate(OPS if len(part) else []):
                t = part[part.operation == op].set_index("condition").reindex(conds)
                xs = np.arange(len(conds)) - 0.4 + width * (j + 0.5)
                ax.bar(xs, t["mean"], width, color=palette[j], label=op)
                err = np.vstack([t["mean"] - t["ci_low"], t["ci_high"] - t["mean"]])
                ax.errorbar(xs, t["mean"], yerr=np.clip(np.nan_to_num(err), 0, None), fmt="none", ecolor="#333",
                            capsize=3, lw=1)
            ax.set_xticks(range(len(conds)), conds)
            ax.axhline(0, color="black", lw=0.8)
            n_q = int(part["n_rows"].max()) if len(part) else 0
            n_f = int(part["n"].max()) if len(part) else 0
            ax.set_title(f"{model}, {method}: {group} ({n_q} queries of {n_f} facts)")
            ax.set_ylabel("ΔProb (relative)")
    axes[0, 0].legend(title="operation", fontsize=8)
    fig.tight_layout()
    return fig


PAIRS = [("own", "union"), ("own", "intersection"), ("own", "random")]


def fact_tests(long: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Wilcoxon own vs union / intersection / random with the FACT as the unit (per-fact means first)."""

    return paired_fact_table(long, cluster=["fact_id"], column="condition", pairs=PAIRS, value="d_prob",
                             by=["model", "method", "group", "operation"], n_boot=n_boot, seed=seed)


# (comparison, a, b, queries): "nonempty" = only the queries whose neighbors' intersection is non-empty
CONTRASTS = [("own − union", "own", "union", "all"), ("own − random", "own", "random", "all"),
             ("own − ∩ (all queries)", "own", "intersection", "all"),
             ("own − ∩", "own", "intersection", "nonempty"),
             ("own − size-matched union subset", "own", "union_matched", "nonempty"),
             ("∩ − size-matched union subset", "intersection", "union_matched", "nonempty")]
CONTRAST_COLUMNS = ["model", "method", "group", "comparison", "queries", "facts", "relations", "mean_a", "mean_b",
                    "estimate", "low", "high", "n", "unit", "p", "detail"]


def claim_contrasts(long: pd.DataFrame, mapping: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Per model × method × class and :data:`CONTRASTS` row: the mean over facts of the per-fact Avg difference
    a − b (:func:`kqlib.paper.mapping.per_fact_effects`), its interval and Wilcoxon p in the unit the claims
    resample (:func:`kqlib.paper.intervals.unit_interval`: relations, facts within, with ≥ 8 relations, else
    facts). The ∩ rows are judged on queries with a non-empty ∩, beside a random subset of the union as large
    as ∩ (the ``union_matched`` condition), so "own beats ∩" is not won by empty intersections."""
    frames = {q: per_fact_effects(long, mapping, nonempty_intersection=q == "nonempty") for q in ("all", "nonempty")}
    rows = []
    for q, facts in frames.items():
        for (model, method, group), g in facts.groupby(["model", "method", "group"], sort=True):
            for name, a, b, which in CONTRASTS:
                if which != q:
                    continue
                sub = g[[a, b]].notna().all(axis=1)
                d, rel = (g[a] - g[b])[sub].to_numpy(float), g.relation[sub].to_numpy(object)
                m = unit_interval(d, rel, n_boot=n_boot, seed=seed, test=True)
                rows.append(dict(model=model, method=method, group=group, comparison=name,
                                 queries=int(g.queries[sub].sum()), facts=int(sub.sum()),
                                 relations=int(pd.Series(rel).nunique()),
                                 mean_a=float(g[a][sub].mean()) if sub.any() else np.nan,
                                 mean_b=float(g[b][sub].mean()) if sub.any() else np.nan, **m))
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def contrasts_view(contrasts: pd.DataFrame):
    cell = [ci_cell(r.estimate, r.low, r.high, "+.3f") for r in contrasts.itertuples()]
    return (contrasts.assign(**{"a − b": cell})[["model", "method", "group", "comparison", "queries", "facts",
                                                 "relations", "a − b", "n", "unit", "p"]]
            .style.format({"p": "{:.2g}"}, na_rep="–").hide(axis="index"))


def mapping_numbers(lms, mapping: pd.DataFrame, summary: pd.DataFrame, tests: pd.DataFrame,
                    contrasts: pd.DataFrame | None = None, *, methods: Sequence[str], enhance_factor: float,
                    threshold_kind: str) -> tuple[dict, list[dict]]:
    """Chapter 03's headline numbers (first model, first method) and its claim measurements (every model; for ``ch.claims_from``)."""

    claims: list[dict] = []
    lm0, method0 = lms[0].name, methods[0]
    S = summary.set_index(["model", "method", "group", "condition", "operation"])
    T = tests.set_index(["model", "method", "group", "operation", "b"])
    notes: dict[str, str] = {}  # number name -> why it is None (the same key as in nums)

    def avg_of(name, group, cond, op="average", col="mean"):
        key = (lm0, method0, group, cond, op)
        if key not in S.index or S.loc[key, "n"] == 0:
            notes[name] = f"no {group} queries for {lm0} / {method0}"
            return None
        return finite_or_none(S.loc[key, col])

    def p_of(name, group, b, op="average"):
        key = (lm0, method0, group, op, b)
        if key not in T.index:
            notes[name] = f"no {group} queries for {lm0} / {method0}"
            return None
        pv = finite_or_none(T.loc[key, "p"])
        if pv is None:
            notes[name] = T.loc[key, "note"]
        return pv

    nums: dict[str, Any] = {"n_models": len(lms), "model0": lm0, "method0": method0,
                            "enhance_factor": float(enhance_factor), "threshold_kind": threshold_kind}
    for g in ("K_C", "K_I"):
        key = g.replace("_", "").lower()
        part = mapping[(mapping.model == lm0) & (mapping.method == method0) & (mapping.group == g)]
        nums[f"n_queries_{key}"] = int(part[UNIT].drop_duplicates().shape[0])
        nums[f"n_facts_{key}"] = int(part.fact_id.nunique())
        for cond in CONDITIONS:
            for op, short in (("average", "avg"), ("suppress", "sup"), ("enhance", "enh")):
                nums[f"{short}_{cond}_{key}"] = avg_of(f"{short}_{cond}_{key}", g, cond, op)
            nums[f"avg_{cond}_{key}_ci"] = [avg_of(f"avg_{cond}_{key}_ci", g, cond, col="ci_low"),
                                             avg_of(f"avg_{cond}_{key}_ci", g, cond, col="ci_high")]
        for b in ("union", "intersection", "random"):
            nums[f"p_own_vs_{b}_{key}"] = p_of(f"p_own_vs_{b}_{key}", g, b)
        own, inter = nums[f"avg_own_{key}"], nums[f"avg_intersection_{key}"]
        nums[f"gap_own_inter_{key}"] = None if own is None or inter is None else own - inter
        sup = part[part.operation == "suppress"]
        nums[f"flip_own_{key}"] = finite_or_none(sup[sup.condition == "own"].flipped.mean()) if len(sup) else None
        nums[f"empty_intersection_{key}"] = (
            finite_or_none((sup[sup.condition == "intersection"].n_neurons == 0).mean()) if len(sup) else None)
    nums["n_interventions"] = int(len(mapping))
    nums["n_queries"] = int(mapping[UNIT].drop_duplicates().shape[0])
    for k in [k for k in nums if k.startswith(("avg_", "sup_", "enh_", "gap_", "flip_", "empty_", "p_"))
              and not k.endswith("_ci")]:
        spec = ".1e" if k.startswith("p_") else (".0%" if k.startswith(("flip_", "empty_")) else "+.2f")
        nums[f"{k}_text"] = fmt(nums[k], ".2f" if k.startswith("avg_") else spec)
    nums["notes"] = notes
    C = (contrasts if contrasts is not None else pd.DataFrame(columns=CONTRAST_COLUMNS)).set_index(
        ["model", "method", "group", "comparison"])
    for lm in lms:
        for claim_id, group, comp in (("mapping_own_vs_intersection", "K_I", "own − ∩"),
                                      ("mapping_own_vs_union", "K_I", "own − union"),
                                      ("mapping_own_vs_random", "K_I", "own − random"),
                                      ("kl_special_case", "K_C", "own − ∩")):
            key = (lm.name, method0, group, comp)
            part = mapping[(mapping.model == lm.name) & (mapping.method == method0) & (mapping.group == group)]
            n_q = int(part[UNIT].drop_duplicates().shape[0])
            if key not in C.index or C.loc[key, "estimate"] is None or not np.isfinite(C.loc[key, "estimate"]):
                claims.append(measurement(claim_id, lm.name, why_not=f"no {group} fact with queries ({method0})" if not n_q else
                         f"none of the {n_q} {group} queries has a non-empty ∩ of its neighbors' KNs "
                         f"({method0}): own vs ∩ would compare with a no-op" if "∩" in comp else
                         f"no {group} query with a defined ΔProb ({method0})"))
                continue
            r = C.loc[key]
            detail = f"own {r.mean_a:.2f} vs {comp.split(' − ')[1]} {r.mean_b:.2f} ({method0}); {r.detail}"
            if comp == "own − ∩":
                m = C.loc[(lm.name, method0, group, "∩ − size-matched union subset")]
                detail = (f"on the {int(r.queries)} of {n_q} {group} queries ({int(r.facts)} facts) whose ∩ is "
                          f"non-empty; beside it ∩ − a random subset of the union as large as ∩: "
                          f"{ci_cell(m.estimate, m.low, m.high, '+.3f')}; " + detail)
            claims.append(measurement(claim_id, lm.name, r.estimate, r.low, r.high, int(r.n), p=finite_or_none(r.p), unit=r.unit,
                     detail=detail))
        gi, gc = [C.loc[(lm.name, method0, g, "own − ∩"), "estimate"]
                  if (lm.name, method0, g, "own − ∩") in C.index else None for g in ("K_I", "K_C")]
        claims.append(measurement("mapping_gap_smaller_kc", lm.name, None if gi is None or gc is None else gi - gc,
                 detail="own − ∩ gap (queries with a non-empty ∩), K_I minus K_C"))
    return nums, claims
