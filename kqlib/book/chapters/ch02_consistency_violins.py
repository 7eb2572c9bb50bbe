"""Chapter 02 (consistency violins): model sizes, the t x θ grid, the site comparison, the chapter's numbers.

The notebook imports this module (as ``K``) and :class:`~kqlib.book.chapter.Chapter` only. Functions take models,
frames, ``data`` (a :class:`~kqlib.book.chapter.Localized`) and plain keyword-only values named as the chapter's
parameters (the notebook passes them with ``ch.call``), and return frames, figures and claim measurements (:func:`kqlib.book.claims.verdicts.measurement`); they never hold
the ``Chapter``: the notebook judges the measurements with ``ch.claims_from``."""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from kqlib.book.claims.verdicts import measurement
from kqlib.book.figures import heat_table
from kqlib.book.profiles import rule_kw
from kqlib.book.report import finite_or_none, order_by_size
from kqlib.paper.consistency import INTERSECTION_METHOD, classify, consistency_table, jaccard, share_inconsistent
from kqlib.paper.localization import localize
from kqlib.paper.stats import cluster_bootstrap_ci, fmt, newcombe_ci, two_level_bootstrap_ci
from kqlib.paper.strata import MIN_RELATIONS

# -------------------------------------------------------------- chapter 02: sizes, thresholds, sites


def size_table(shares: pd.DataFrame, sizes: Mapping[str, Mapping]) -> pd.DataFrame:
    """K_I shares per model with both size measures, ordered by MLP neurons."""
    order = {m: i for i, m in enumerate(order_by_size(sizes))}
    out = shares.assign(**{"MLP neurons": shares.model.map(lambda m: sizes[m]["mlp_neurons"]),
                           "params (M)": shares.model.map(lambda m: round(sizes[m]["parameters"] / 1e6, 1)),
                           "non-emb. params (M)": shares.model.map(
                               lambda m: round(sizes[m]["non_embedding_parameters"] / 1e6, 1)),
                           "_o": shares.model.map(order)})
    out = out.sort_values(["_o", "threshold_kind", "method"])
    return out[["model", "MLP neurons", "params (M)", "non-emb. params (M)", "threshold_kind", "method", "n_facts",
                "share_ki", "ci_low", "ci_high"]]


def threshold_grid(data, *, t_grid: Sequence[float], theta_grid: Sequence[float], cs_kind: str, site: str,
                   seed: int, rule: str, steps: int | None = None, tol: float | None = None) -> pd.DataFrame:
    """∩ and per-method K_I shares for every (t, θ) of ``t_grid`` × ``theta_grid`` (KN sets recomputed
    from the cached scores for every t)."""
    rows = []
    for t in t_grid:
        loc_t = {lm.name: localize(lm, data.datasets[lm.name].queries, data.methods,
                                   **rule_kw(rule=rule, steps=steps, tol=tol), site=site, t=float(t), progress=False)
                 for lm in data.lms}
        s_t = ki_share_table(data.consistency(cs_kind, loc_t), kind=cs_kind, static=list(theta_grid),
                             otsu=False, n_boot=1, seed=seed)
        for r in s_t.itertuples():
            rows.append(dict(model=r.model, method=r.method, t=float(t), theta=float(r.threshold),
                             share_ki=r.share_ki, n_facts=r.n_facts))
    return pd.DataFrame(rows)


def grid_figure(grid: pd.DataFrame, models: Sequence[str], methods: Sequence[str]):


    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        tab = grid[(grid.model == m) & (grid.method == INTERSECTION_METHOD)].pivot(index="t", columns="theta",
                                                                                    values="share_ki")
        heat_table(ax, tab, xlabel="consistency threshold θ", ylabel="per-query KN threshold t",
                   title=f"{m}: K_I share (∩ of {', '.join(methods)})")
    fig.tight_layout()
    return fig


def site_comparison(data, *, site: str, compare_site: str, site_methods: Sequence[str],
                    site_relations: Sequence[str], n_site_facts: int, cs_kind: str, t_threshold: float,
                    static_threshold: float, seed: int, rule: str, steps: int | None = None,
                    tol: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The same facts attributed at ``site`` and ``compare_site`` (methods ``site_methods``, facts
    ``site_relations`` / ``n_site_facts``): per-fact CS per site, per-query KN-set Jaccard, and a
    summary per (model, method, site)."""

    kind = cs_kind
    site_rows, overlap_rows = [], []
    for lm in data.lms:
        entries = [e for e in data.datasets[lm.name].facts if not site_relations or e.fact.relation in site_relations]
        entries = sorted(entries, key=lambda e: (e.fact.relation, e.fact.fact_id))
        if n_site_facts and len(entries) > n_site_facts:
            entries = random.Random(seed).sample(entries, n_site_facts)
        qs = [q for e in entries for q in e.queries]
        if not qs:
            continue
        by_site = {}
        for s in (site, compare_site):
            by_site[s] = localize(lm, qs, site_methods, **rule_kw(rule=rule, steps=steps, tol=tol), site=s,
                                  t=t_threshold, progress=False)
            c = consistency_table(by_site[s].neurons, queries=by_site[s].queries).dropna(subset=[kind])
            site_rows.append(c.assign(site=s))
        for m in site_methods:
            a, b = by_site[site].sets(m, model=lm.name), by_site[compare_site].sets(m, model=lm.name)
            for key in a:
                overlap_rows.append(dict(model=lm.name, method=m, fact_id=key[0], pattern_index=key[1],
                                         jaccard=jaccard(a[key], b[key]), n_post=len(a[key]), n_pre=len(b[key])))
    site_cs = pd.concat(site_rows, ignore_index=True) if site_rows else pd.DataFrame(
        columns=["model", "method", "fact_id", kind, "site", "mean_set_size"])
    overlap = pd.DataFrame(overlap_rows, columns=["model", "method", "fact_id", "pattern_index", "jaccard", "n_post",
                                                  "n_pre"])
    summary = (site_cs.groupby(["model", "method", "site"])
               .agg(facts=("fact_id", "nunique"), mean_cs=(kind, "mean"),
                    ki_static=(kind, lambda v: share_inconsistent(v, static_threshold)),
                    mean_kns=("mean_set_size", "mean"))
               .reset_index())
    return site_cs, overlap, summary


def site_figure(site_cs: pd.DataFrame, *, site: str, compare_site: str, cs_kind: str, static_threshold: float):

    paired = site_cs.pivot_table(index=["model", "method", "fact_id"], columns="site", values=cs_kind).reset_index()
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    sns.scatterplot(data=paired, x=site, y=compare_site, hue="method", ax=ax, s=40)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.axhline(static_threshold, color="#c0392b", linestyle="--", linewidth=1)
    ax.axvline(static_threshold, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{cs_kind.upper()} at site {site!r}")
    ax.set_ylabel(f"{cs_kind.upper()} at site {compare_site!r}")
    ax.set_title(f"same facts, two neuron sites (n = {len(paired)})")
    fig.tight_layout()
    return fig


def model_order_claim(cs: pd.DataFrame, sizes: Mapping[str, Mapping], *, cs_kind: str,
                      static_threshold: float) -> dict:
    """Claim 2: ∩ static K_I share of the model with the fewest MLP neurons minus that of the model with the
    most, bootstrap over each model's facts; "not measurable here" with one model. The detail names both
    orderings (MLP neurons and parameters)."""

    by_mlp, by_params = order_by_size(sizes, "mlp_neurons"), order_by_size(sizes, "parameters")
    orders = (f"smallest by MLP neurons: {by_mlp[0]} ({sizes[by_mlp[0]]['mlp_neurons']:,}); "
              f"by parameters: {by_params[0]} ({sizes[by_params[0]]['parameters'] / 1e6:.0f} M)")
    if len(sizes) < 2:
        return dict(why_not="needs two models (profile cpu or paper)", detail=orders)

    small, large = by_mlp[0], by_mlp[-1]
    a = intersection_flags(cs, cs_kind, static_threshold, small)
    b = intersection_flags(cs, cs_kind, static_threshold, large)
    if not a.size or not b.size:
        return dict(why_not="a model has no classified fact", detail=orders)
    d, lo, hi = newcombe_ci(int(a.sum()), a.size, int(b.sum()), b.size)
    return dict(estimate=d, low=lo, high=hi, n=int(min(a.size, b.size)), unit="facts (smaller sample)",
                interval="newcombe",
                detail=f"{small} {a.mean():.0%} (n={a.size}) − {large} {b.mean():.0%} (n={b.size}); {orders}")


def violin_numbers(sizes, cs: pd.DataFrame, shares: pd.DataFrame, grid: pd.DataFrame, site_cs: pd.DataFrame,
                   overlap: pd.DataFrame, site_summary: pd.DataFrame, *, cs_kind: str, static_threshold: float,
                   site: str, compare_site: str, site_methods: Sequence[str], n_boot: int,
                   seed: int) -> tuple[dict, list[dict]]:
    """Chapter 02's headline numbers and claim measurements (for ``ch.claims_from``)."""
    claims: list[dict] = []
    order = order_by_size(sizes)
    small, large = order[0], order[-1]
    inter = shares[shares.method == INTERSECTION_METHOD].set_index(["model", "threshold_kind"])
    g_inter = grid[grid.method == INTERSECTION_METHOD]
    post_ki = site_summary[site_summary.site == site]["ki_static"]
    pre_ki = site_summary[site_summary.site == compare_site]["ki_static"]
    head = inter.loc[(small, "static")]
    nums = {
        "n_models": len(sizes), "n_facts": int(cs.drop_duplicates(["model", "fact_id"]).shape[0]),
        "n_relations": int(cs.relation.nunique()),
        "share_below_static": float(classify(cs[cs_kind], static_threshold).mean()),
        "median_cs": float(cs[cs_kind].median()), "smallest_model": small, "largest_model": large,
        "ki_static_all_smallest": finite_or_none(inter.loc[(small, "static"), "share_ki"]),
        "ki_static_all_largest": finite_or_none(inter.loc[(large, "static"), "share_ki"]),
        "grid_min": float(g_inter.share_ki.min()), "grid_max": float(g_inter.share_ki.max()),
        "headline_ci_width": finite_or_none(head.ci_high - head.ci_low),
        "site_facts": int(site_cs[site_cs.site == site].drop_duplicates(["model", "fact_id"]).shape[0]),
        "site_mean_jaccard": finite_or_none(overlap.jaccard.mean()) if len(overlap) else None,
        "site_ki_post": finite_or_none(post_ki.mean()) if len(post_ki) else None,
        "site_ki_pre": finite_or_none(pre_ki.mean()) if len(pre_ki) else None,
    }
    for key in ("ki_static_all_smallest", "ki_static_all_largest", "site_ki_post", "site_ki_pre",
                "site_mean_jaccard"):
        nums[key + "_text"] = fmt(nums[key], ".2f" if key == "site_mean_jaccard" else ".0%")
    nums["share_below_static_text"] = f"{nums['share_below_static']:.0%}"
    nums["grid_range_text"] = f"{nums['grid_min']:.0%}–{nums['grid_max']:.0%}"
    spread, width = nums["grid_max"] - nums["grid_min"], nums["headline_ci_width"]
    nums["grid_spread_text"] = f"{spread:.0%}"
    nums["headline_ci_width_text"] = fmt(width, ".0%")
    nums["grid_vs_ci_text"] = ("cannot be compared (no interval)" if width is None else
                               "move the headline number more than" if spread > width else
                               "move the headline number less than")
    for m in sizes:
        claims.append(measurement("cs_below_threshold", m, **below_threshold_claim(cs, cs_kind, static_threshold, m,
                                                                                   n_boot, seed)))
    claims.append(measurement("model_order", "all", **model_order_claim(cs, sizes, cs_kind=cs_kind,
                                                                        static_threshold=static_threshold)))
    claims.append(measurement("threshold_sensitivity", "all", spread, n=nums["n_facts"],
             detail=f"∩ K_I share over the t × θ grid: {nums['grid_range_text']}; 95 % CI width of "
                    f"{small}'s static ∩ share: {nums['headline_ci_width_text']}"))
    claims.append(measurement("neuron_site", "all", None if nums["site_ki_pre"] is None or nums["site_ki_post"] is None else
             nums["site_ki_pre"] - nums["site_ki_post"], n=nums["site_facts"],
             detail=f"K_I (static, {', '.join(site_methods)}): post {nums['site_ki_post_text']}, pre "
                    f"{nums['site_ki_pre_text']}; KN-set Jaccard {nums['site_mean_jaccard_text']}"))
    return nums, claims


def intersection_flags(cs: pd.DataFrame, kind: str, threshold: float, model: str) -> np.ndarray:
    """Per fact of ``model``: K_I under every method at the static ``threshold`` (the ∩ column of
    :func:`ki_share_table`: facts present for every method, K_none facts left out)."""
    part = cs[cs.model == model]
    if "union_size" in part.columns:
        part = part[part.union_size > 0]
    wide = part.pivot_table(index="fact_id", columns="method", values=kind, aggfunc="first").dropna()
    if not len(wide):
        return np.array([], dtype=bool)
    return np.column_stack([classify(wide[c], threshold) for c in wide.columns]).all(axis=1)


def below_threshold_claim(cs: pd.DataFrame, kind: str, threshold: float, model: str, n_boot: int = 2000,
                          seed: int = 0) -> dict:
    """Share of (fact, method) CS values below θ for one model. CI: a two-level bootstrap over relations
    (facts within) when there are at least :data:`kqlib.paper.strata.MIN_RELATIONS` relations, else a cluster
    bootstrap over facts; n counts the resampled unit."""

    part = cs[cs.model == model]
    below = classify(part[kind], threshold).astype(float)
    n_rel = part.relation.nunique() if "relation" in part else 0
    if n_rel >= MIN_RELATIONS:
        per_fact = part.assign(b=below).groupby(["relation", "fact_id"]).b.mean().reset_index()
        lo, hi = two_level_bootstrap_ci(per_fact.b, per_fact.relation, n_boot=n_boot, seed=seed)
        n, unit = int(n_rel), "relations"
    else:
        lo, hi = cluster_bootstrap_ci(below, part.fact_id.to_numpy(), n_boot=n_boot, seed=seed)
        n, unit = int(part.fact_id.nunique()), "facts"
    return dict(estimate=float(below.mean()) if below.size else None, low=lo, high=hi, n=n, unit=unit,
                detail=f"{below.size} (fact, method) scores")


# What the notebook calls besides this module's own functions (it imports this module and Chapter only).
from kqlib.book.figures import violin_figure  # noqa: E402,F401
from kqlib.book.report import records  # noqa: E402,F401
from kqlib.paper.consistency import floor_table, ki_share_table  # noqa: E402,F401
