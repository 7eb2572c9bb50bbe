"""Chapter 01 (KL re-examination): Figure 1, the one-query edits of Table 2 and the chapter's numbers.

The chapter notebook calls these through :mod:`kqlib.book.chapter` (``K.name``); ``ch`` is its
:class:`~kqlib.book.chapter.Chapter`, ``p`` its parameters, ``data`` its :class:`~kqlib.book.chapter.Localized`."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import pandas as pd

from kqlib.book import report
from kqlib.paper.consistency import class_label_series as class_labels
from kqlib.paper.stats import ci_cell, fmt


# ----------------------------------------------------------------------- chapter 01: Figure 1, Table 2


def figure1(lm, cs: pd.DataFrame, data, method: str, p) -> tuple[Any, dict]:
    """The data-chosen Figure 1: the most and the least consistent fact of ``lm`` under ``method`` (ties by
    fact id), two queries each, their attribution heatmaps over the same top neurons per layer."""
    import matplotlib.pyplot as plt

    from kqlib.book.figures import query_heatmaps
    from kqlib.book.profiles import rule_kw
    from kqlib.paper.localization import query_scores

    kind = p.cs_kind
    pool = cs[(cs.model == lm.name) & (cs.method == method)].sort_values([kind, "fact_id"])
    chosen = {"most consistent": pool.iloc[-1], "least consistent": pool.iloc[0]} if len(pool) else {}
    by_fact = {e.fact.fact_id: e for e in data.datasets[lm.name].facts}
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.6), sharey=True)
    info, image = {}, None
    for col, (label, row) in enumerate(chosen.items()):
        two = sorted(by_fact[row.fact_id].queries, key=lambda q: q.pattern_index)[:2]
        sc = query_scores(lm, two, method=method, site=p.site, **rule_kw(p))
        image = query_heatmaps(axes[2 * col: 2 * col + 2], sc.numpy(),
                               [f"{label} ({kind} = {row[kind]:.2f})\n“{q.prompt} …”" for q in two])
        f = by_fact[row.fact_id].fact
        info[label] = dict(subject=f.subject, relation=f.relation, obj=f.obj, cs=float(row[kind]),
                           prompts=[q.prompt for q in two])
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="attribution / max")
    fig.suptitle(f"{lm.name}, {method}: two neighbor queries of the most and the least consistent fact", y=1.04)
    return fig, info


def one_query_edits(lms, data, cs: pd.DataFrame, p) -> pd.DataFrame:
    """Table 2's edits: each fact edited through the KNs of one query (``kqlib.paper.kl_editing``), with its CS."""
    from kqlib.paper import editing
    from kqlib.paper import kl_editing

    frames = []
    for lm in lms:
        mine = cs[(cs.model == lm.name) & (cs.method == p.edit_method)]
        t0 = time.time()
        df = kl_editing.run_single_query_edits(
            lm, data.datasets[lm.name], data.locs[lm.name].sets(p.edit_method, model=lm.name),
            query_filter=p.query_filter, n_unrelated=p.n_unrelated, fact_ids=list(mine.fact_id),
            n_facts=p.n_edit_facts or None, seed=p.seed, ppl_texts=editing.DEFAULT_PPL_TEXTS[:p.n_ppl_texts])
        frames.append(df.merge(mine[["model", "fact_id", p.cs_kind]].rename(columns={p.cs_kind: "cs"}),
                               on=["model", "fact_id"], how="left"))
        print(f"{lm.name}: {df.fact_id.nunique()} of {len(mine)} facts edited ({len(df)} edits) in "
              f"{time.time() - t0:.0f} s")
    return pd.concat(frames, ignore_index=True)


def edit_classes(cs: pd.DataFrame, shares: pd.DataFrame, p, tk: str) -> dict[tuple[str, str], str]:
    """``{(model, fact_id): "K_C" | "K_I" | "K_none"}`` under ``p.edit_method`` at threshold kind ``tk``."""
    from kqlib.paper.consistency import thetas

    theta = thetas(shares)
    part = cs[cs.method == p.edit_method]
    labels = class_labels(part, {(m, p.edit_method): theta[(m, p.edit_method, tk)] for m in part.model.unique()},
                          p.cs_kind)
    return {(m, f): c for m, f, c in zip(part.model, part.fact_id, labels)}


def table2(edits: pd.DataFrame, cs: pd.DataFrame, shares: pd.DataFrame, p) -> pd.DataFrame:
    """Mean Rel/Gen/Loc/Avg/ΔPPL with bootstrap CIs over facts per (model, threshold kind, task, class)."""
    from kqlib.paper import kl_editing

    out = pd.concat([kl_editing.table2(edits, edit_classes(cs, shares, p, tk), n_boot=p.n_boot, seed=p.seed)
                     .assign(threshold_kind=tk) for tk in ("static", "otsu")], ignore_index=True)
    return out[out.group != "all"].rename(columns={"group": "cls"}).reset_index(drop=True)


def table2_view(t2: pd.DataFrame):
    view = t2[["model", "threshold_kind", "task", "cls", "facts"]].copy()
    for m, label, spec in (("rel", "Rel", ".2f"), ("gen", "Gen", ".2f"), ("loc", "Loc", ".2f"),
                           ("avg", "Avg", ".2f"), ("dppl", "ΔPPL", "+.3g")):
        view[label] = [ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"], spec) for _, r in t2.iterrows()]
    return view.rename(columns={"cls": "class"}).style.hide(axis="index")


def table2_figure(edits: pd.DataFrame, classes: Mapping, p):
    """Rel/Gen/Loc bars per class for erase and update (static θ)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = (edits.assign(cls=[classes.get((m, f)) for m, f in zip(edits.model, edits.fact_id)])
            .melt(id_vars=["model", "fact_id", "task", "cls"], value_vars=["rel", "gen", "loc"], var_name="metric"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, task in zip(axes, ("erase", "update")):
        part = long[long.task == task].dropna(subset=["value"])
        if len(part):
            sns.barplot(data=part, x="metric", y="value", hue="cls", hue_order=["K_C", "K_I"],
                        order=["rel", "gen", "loc"], ax=ax, errorbar=("ci", 95), seed=p.seed, legend=ax is axes[0])
        ax.set_title(f"{task} ({part.fact_id.nunique()} facts)")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("")
        ax.set_ylabel("mean over facts (95 % CI)")
    fig.suptitle(f"One-query edits by class (static θ = {p.static_threshold:g}, {p.edit_method} KNs)")
    fig.tight_layout()
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "upper left", bbox_to_anchor=(2.05, 1.0), title="class", frameon=False)
    return fig


def gen_gap(edits: pd.DataFrame, classes: Mapping, model: str, task: str = "erase", p=None) -> dict:
    """Gen(K_C) − Gen(K_I) over the edited facts of one model and task, with a bootstrap CI over the facts of
    each class; n = facts of the smaller class."""
    from kqlib.paper.stats import share_difference_ci

    part = edits[(edits.model == model) & (edits.task == task)]
    cls = np.array([classes.get((model, f)) for f in part.fact_id], dtype=object)
    kc = part.gen[cls == "K_C"].dropna().to_numpy(float)
    ki = part.gen[cls == "K_I"].dropna().to_numpy(float)
    if not len(kc) or not len(ki):
        return dict(why_not=f"a class has no edited fact ({len(kc)} K_C, {len(ki)} K_I)")
    d, lo, hi = share_difference_ci(kc, ki, n_boot=getattr(p, "n_boot", 2000), seed=getattr(p, "seed", 0))
    return dict(estimate=d, low=lo, high=hi, n=min(len(kc), len(ki)), unit="facts (smaller class)",
                detail=f"{len(kc)} K_C / {len(ki)} K_I edited facts")


def kl_numbers(ch, data, cs: pd.DataFrame, shares: pd.DataFrame, edits: pd.DataFrame,
               classes: Mapping) -> dict[str, Any]:
    """Chapter 01's headline numbers (glued into its prose) and its claims (kept on ``ch``)."""
    from kqlib.paper.consistency import INTERSECTION_METHOD, welch_claim

    p, lms = ch.p, ch.models()
    facts = data.facts
    inter = shares[shares.method == INTERSECTION_METHOD].set_index(["model", "threshold_kind"])
    per_method = shares[shares.method != INTERSECTION_METHOD]
    static_pm = per_method[per_method.threshold_kind == "static"]
    ps = per_method["welch_p"].to_numpy(float)
    n_p = int(np.isfinite(ps).sum())
    gaps = {task: [gen_gap(edits, classes, lm.name, task, p) for lm in lms] for task in ("erase", "update")}
    mean_gap = {t: (float(np.mean([g["estimate"] for g in v])) if all("estimate" in g for g in v) else None)
                for t, v in gaps.items()}
    erase = edits[edits.task == "erase"]
    cls = [classes.get((m, f)) for m, f in zip(erase.model, erase.fact_id)]
    lm0 = lms[0].name
    nums = {
        "n_models": len(lms), "n_facts": int(facts.drop_duplicates(["model", "fact_id"]).shape[0]),
        "n_queries": int(facts.shape[0]), "n_relations": int(facts.relation.nunique()),
        "queries_per_fact": float(facts.groupby(["model", "fact_id"]).size().mean()), "model0": lm0,
        "ki_static_all_model0": report.finite_or_none(inter.loc[(lm0, "static"), "share_ki"]),
        "ki_otsu_all_model0": report.finite_or_none(inter.loc[(lm0, "otsu"), "share_ki"]),
        "ki_static_min_method": float(static_pm.share_ki.min()),
        "ki_static_max_method": float(static_pm.share_ki.max()),
        "share_below_static": float((cs[p.cs_kind] < p.static_threshold).mean()),
        "mean_cs": float(cs[p.cs_kind].mean()), "n_none_facts": int(shares.n_none.max()),
        "n_welch_p_defined": n_p, "n_welch_tests": int(len(ps)),
        "welch_p_max": float(np.nanmax(ps)) if n_p else None,
        "n_edits": int(len(edits)), "n_edited_facts": int(edits.drop_duplicates(["model", "fact_id"]).shape[0]),
        "gen_gap_erase": mean_gap["erase"], "gen_gap_update": mean_gap["update"],
        "edited_kc_facts": int(sum(c == "K_C" for c in cls)), "edited_ki_facts": int(sum(c == "K_I" for c in cls)),
    }
    nums["gen_gap_erase_text"] = fmt(nums["gen_gap_erase"], "+.2f")
    nums["gen_gap_update_text"] = fmt(nums["gen_gap_update"], "+.2f")
    nums["welch_p_max_text"] = fmt(nums["welch_p_max"], ".1e", "undefined (a group has fewer than 2 facts)")
    for k in ("ki_static_all_model0", "ki_otsu_all_model0", "ki_static_min_method", "ki_static_max_method",
              "share_below_static"):
        nums[k + "_text"] = fmt(nums[k], ".0%")
    for lm in lms:
        r = inter.loc[(lm.name, "static")]
        ch.claim("ki_majority", lm.name, r.share_ki, r.ci_low, r.ci_high, int(r.n_facts), interval="wilson",
                 detail=f"per method {static_pm[static_pm.model == lm.name].share_ki.min():.0%}–"
                        f"{static_pm[static_pm.model == lm.name].share_ki.max():.0%}")
        ch.claim("welch_separation", lm.name, **welch_claim(shares, lm.name))
        ch.claim("edit_gen_gap", lm.name, **gen_gap(edits, classes, lm.name, "erase", p))
    return nums


def filter_sensitivity(ch, data, method: str) -> pd.DataFrame:
    """Table 1's K_I share (static θ, Wilson 95 % interval over facts) of ``method`` on the same facts under
    both answer filters: the book's ``p.query_filter`` (the queries in ``data``) and the other one, the
    sensitivity row (its extra queries are attributed with ``method`` only)."""
    from kqlib.paper import consistency as C
    from kqlib.paper.pararel import QUERY_FILTERS

    p = ch.p
    other = next(f for f in QUERY_FILTERS if f != p.query_filter)
    rows = []
    for name, loc in ((p.query_filter, data), (other, ch.localize([method], verbose=False, query_filter=other))):
        cs = loc.consistency(p.cs_kind)
        share = C.ki_share_table(cs[cs.method == method], kind=p.cs_kind, static=p.static_threshold, otsu=False,
                                 n_boot=p.n_boot, seed=p.seed)
        n_q = loc.facts.groupby("model").size()
        for r in share[share.method == method].itertuples():
            rows.append({"model": r.model, "query_filter": name + (" (the book's)" if name == p.query_filter else ""),
                         "facts": int(r.n_facts), "queries": int(n_q.get(r.model, 0)),
                         "K_I share [95 % CI]": ci_cell(r.share_ki, r.ci_low, r.ci_high, ".0%")})
    return pd.DataFrame(rows)
