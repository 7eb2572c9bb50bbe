"""Chapter 01 (KL re-examination): Figure 1, the one-query edits of Table 2 and the chapter's numbers.

The notebook imports this module (as ``K``) and :class:`~kqlib.book.chapter.Chapter` only. Functions take models,
frames, ``data`` (a :class:`~kqlib.book.chapter.Localized`) and plain keyword-only values named as the chapter's
parameters (the notebook passes them with ``ch.call``), and return frames, figures and claim measurements (:func:`kqlib.book.claims.verdicts.measurement`); they never hold
the ``Chapter``: the notebook judges the measurements with ``ch.claims_from``."""

from __future__ import annotations

import time
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from kqlib.book import report
from kqlib.book.claims.verdicts import measurement
from kqlib.book.figures import query_heatmaps
from kqlib.book.profiles import rule_kw
from kqlib.paper import consistency as C
from kqlib.paper import editing, kl_editing, path_points, strata
from kqlib.paper.consistency import INTERSECTION_METHOD, classify, share_inconsistent, thetas, welch_claim, wilson_ci
from kqlib.paper.consistency import class_label_series as class_labels
from kqlib.paper.localization import query_scores
from kqlib.paper.pararel import QUERY_FILTERS
from kqlib.paper.stats import ci_cell, fmt
from kqlib.paper.strata import within_stratum_gap

# ----------------------------------------------------------------------- chapter 01: Figure 1, Table 2


def figure1(lm, cs: pd.DataFrame, data, method: str, *, cs_kind: str, site: str, rule: str,
            steps: int | None = None, tol: float | None = None) -> tuple[Any, dict]:
    """The data-chosen Figure 1: the most and the least consistent fact of ``lm`` under ``method`` (ties by
    fact id), two queries each, their attribution heatmaps over the same top neurons per layer."""

    kind = cs_kind
    pool = cs[(cs.model == lm.name) & (cs.method == method)].sort_values([kind, "fact_id"])
    chosen = {"most consistent": pool.iloc[-1], "least consistent": pool.iloc[0]} if len(pool) else {}
    by_fact = {e.fact.fact_id: e for e in data.datasets[lm.name].facts}
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.6), sharey=True)
    info, image = {}, None
    for col, (label, row) in enumerate(chosen.items()):
        two = sorted(by_fact[row.fact_id].queries, key=lambda q: q.pattern_index)[:2]
        sc = query_scores(lm, two, method=method, site=site, **rule_kw(rule=rule, steps=steps, tol=tol))
        image = query_heatmaps(axes[2 * col: 2 * col + 2], sc.numpy(),
                               [f"{label} ({kind} = {row[kind]:.2f})\n“{q.prompt} …”" for q in two])
        f = by_fact[row.fact_id].fact
        info[label] = dict(subject=f.subject, relation=f.relation, obj=f.obj, cs=float(row[kind]),
                           prompts=[q.prompt for q in two])
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="attribution / max")
    fig.suptitle(f"{lm.name}, {method}: two neighbor queries of the most and the least consistent fact", y=1.04)
    return fig, info


def one_query_edits(lms, data, cs: pd.DataFrame, *, edit_method: str, cs_kind: str, query_filter: str,
                    n_unrelated: int, n_edit_facts: int, n_ppl_texts: int, seed: int) -> pd.DataFrame:
    """Table 2's edits: each fact edited through the KNs of one query (``kqlib.paper.kl_editing``), with its CS."""
    frames = []
    for lm in lms:
        mine = cs[(cs.model == lm.name) & (cs.method == edit_method)]
        t0 = time.time()
        df = kl_editing.run_single_query_edits(
            lm, data.datasets[lm.name], data.locs[lm.name].sets(edit_method, model=lm.name),
            query_filter=query_filter, n_unrelated=n_unrelated, fact_ids=list(mine.fact_id),
            n_facts=n_edit_facts or None, seed=seed, ppl_texts=editing.DEFAULT_PPL_TEXTS[:n_ppl_texts])
        frames.append(df.merge(mine[["model", "fact_id", cs_kind]].rename(columns={cs_kind: "cs"}),
                               on=["model", "fact_id"], how="left"))
        print(f"{lm.name}: {df.fact_id.nunique()} of {len(mine)} facts edited ({len(df)} edits) in "
              f"{time.time() - t0:.0f} s")
    return pd.concat(frames, ignore_index=True)


def edit_classes(cs: pd.DataFrame, shares: pd.DataFrame, tk: str, *, edit_method: str,
                 cs_kind: str) -> dict[tuple[str, str], str]:
    """``{(model, fact_id): "K_C" | "K_I" | "K_none"}`` under ``edit_method`` at threshold kind ``tk``."""
    theta = thetas(shares)
    part = cs[cs.method == edit_method]
    labels = class_labels(part, {(m, edit_method): theta[(m, edit_method, tk)] for m in part.model.unique()},
                          cs_kind)
    return {(m, f): c for m, f, c in zip(part.model, part.fact_id, labels)}


def table2(edits: pd.DataFrame, cs: pd.DataFrame, shares: pd.DataFrame, *, edit_method: str, cs_kind: str,
           n_boot: int, seed: int) -> pd.DataFrame:
    """Mean Rel/Gen/Loc/Avg/ΔPPL with bootstrap CIs over facts per (model, threshold kind, task, class)."""
    out = pd.concat([kl_editing.table2(edits, edit_classes(cs, shares, tk, edit_method=edit_method, cs_kind=cs_kind),
                                       n_boot=n_boot, seed=seed)
                     .assign(threshold_kind=tk) for tk in ("static", "otsu")], ignore_index=True)
    return out[out.group != "all"].rename(columns={"group": "cls"}).reset_index(drop=True)


def table2_view(t2: pd.DataFrame):
    view = t2[["model", "threshold_kind", "task", "cls", "facts"]].copy()
    for m, label, spec in (("rel", "Rel", ".2f"), ("gen", "Gen", ".2f"), ("loc", "Loc", ".2f"),
                           ("avg", "Avg", ".2f"), ("dppl", "ΔPPL", "+.3g")):
        view[label] = [ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"], spec) for _, r in t2.iterrows()]
    return view.rename(columns={"cls": "class"}).style.hide(axis="index")


def table2_figure(edits: pd.DataFrame, classes: Mapping, *, static_threshold: float, edit_method: str, seed: int):
    """Rel/Gen/Loc bars per class for erase and update (static θ)."""
    long = (edits.assign(cls=[classes.get((m, f)) for m, f in zip(edits.model, edits.fact_id)])
            .melt(id_vars=["model", "fact_id", "task", "cls"], value_vars=["rel", "gen", "loc"], var_name="metric"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, task in zip(axes, ("erase", "update")):
        part = long[long.task == task].dropna(subset=["value"])
        if len(part):
            sns.barplot(data=part, x="metric", y="value", hue="cls", hue_order=["K_C", "K_I"],
                        order=["rel", "gen", "loc"], ax=ax, errorbar=("ci", 95), seed=seed, legend=ax is axes[0])
        ax.set_title(f"{task} ({part.fact_id.nunique()} facts)")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("")
        ax.set_ylabel("mean over facts (95 % CI)")
    fig.suptitle(f"One-query edits by class (static θ = {static_threshold:g}, {edit_method} KNs)")
    fig.tight_layout()
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "upper left", bbox_to_anchor=(2.05, 1.0), title="class", frameon=False)
    return fig


def gen_gap(edits: pd.DataFrame, classes: Mapping, model: str, task: str = "erase", *, n_boot: int = 2000,
            seed: int = 0) -> dict:
    """Gen(K_C) − Gen(K_I) of one model and task, stratified by relation (the relation sets k, and with it
    the class): d_r = mean Gen of its K_C facts − mean Gen of its K_I facts for every relation that has
    edited facts of both classes; the estimate is the mean of d_r with a bootstrap over those relations
    (n = relations)."""

    part = edits[(edits.model == model) & (edits.task == task)].dropna(subset=["gen"])
    part = part.assign(cls=[classes.get((model, f)) for f in part.fact_id])
    r = within_stratum_gap(part.gen, part.cls, part.relation, "K_C", "K_I", n_boot=n_boot,
                           seed=seed, stratum_name="relation", unit_name="edited fact")
    if "why_not" in r:
        return dict(why_not=r["why_not"])
    return dict(estimate=r["estimate"], low=r["low"], high=r["high"], n=r["n"], unit="relations",
                detail=f"within-relation gaps of {r['n']} relation(s) with both classes; {r['n_a']} K_C / "
                       f"{r['n_b']} K_I edited facts")


def kl_numbers(lms, data, cs: pd.DataFrame, shares: pd.DataFrame, edits: pd.DataFrame, classes: Mapping, *,
               cs_kind: str, static_threshold: float, n_boot: int, seed: int) -> tuple[dict[str, Any], list[dict]]:
    """Chapter 01's headline numbers (glued into its prose) and its claim measurements (for ``ch.claims_from``)."""
    claims: list[dict] = []
    facts = data.facts
    inter = shares[shares.method == INTERSECTION_METHOD].set_index(["model", "threshold_kind"])
    per_method = shares[shares.method != INTERSECTION_METHOD]
    static_pm = per_method[per_method.threshold_kind == "static"]
    ps = per_method["welch_p"].to_numpy(float)
    n_p = int(np.isfinite(ps).sum())
    gaps = {task: [gen_gap(edits, classes, lm.name, task, n_boot=n_boot, seed=seed) for lm in lms]
            for task in ("erase", "update")}
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
        "share_below_static": float(C.classify(cs[cs_kind], static_threshold).mean()),
        "mean_cs": float(cs[cs_kind].mean()), "n_none_facts": int(shares.n_none.max()),
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
    reach = strata.reach_table(cs, static_threshold, cs_kind).set_index(["model", "method"])
    chance = strata.chance_summary(cs, n_boot=n_boot, seed=seed).set_index(["model", "method"])
    c0 = chance.loc[(lm0, "all")] if (lm0, "all") in chance.index else None
    nums["delta_j_model0_text"] = "not measurable (no fact has a null)" if c0 is None else \
        ci_cell(c0.mean_delta, c0.ci_low, c0.ci_high, "+.3f") + f" over {int(c0.n_facts)} facts of {int(c0.n_relations)} relations"
    nums["not_above_chance_model0_text"] = "–" if c0 is None else ci_cell(c0.share_ki, c0.ki_low, c0.ki_high, ".0%")
    nums["can_reach_model0"] = int(reach.loc[(lm0, INTERSECTION_METHOD), "can_reach"]) \
        if (lm0, INTERSECTION_METHOD) in reach.index else 0
    for lm in lms:
        r = inter.loc[(lm.name, "static")]
        claims.append(measurement("ki_majority_chance", lm.name, **chance_claim(chance, lm.name)))
        claims.append(measurement("ki_majority", lm.name, r.share_ki, r.ci_low, r.ci_high, int(r.n_facts), interval="wilson",
                 why_not=reach_why_not(reach, lm.name, static_threshold),
                 detail=f"per method {static_pm[static_pm.model == lm.name].share_ki.min():.0%}–"
                        f"{static_pm[static_pm.model == lm.name].share_ki.max():.0%}"))
        claims.append(measurement("welch_separation", lm.name, **welch_claim(shares, lm.name)))
        claims.append(measurement("edit_gen_gap", lm.name, **gen_gap(edits, classes, lm.name, "erase", n_boot=n_boot,
                                                                     seed=seed)))
    return nums, claims


def filter_sensitivity(data, other_loc, method: str, *, query_filter: str, cs_kind: str, static_threshold: float,
                       n_boot: int, seed: int) -> pd.DataFrame:
    """The answer filter, like with like: ``method`` alone (no ∩) on the same facts under both filters (the
    book's ``query_filter``, the queries in ``data``, and the other one, ``other_loc``, attributed with
    ``method`` only). Rows per model: the CS2 K_I share at the static θ (Wilson); the
    same with every fact's phrasings subsampled to its number of answered phrasings (matched k); the
    population mean delta_j (two-level interval over relations); and, within templates, the Jaccard of an
    answered phrasing with its fact's others minus that of an unanswered one."""

    other = next(f for f in QUERY_FILTERS if f != query_filter)
    locs = {query_filter: data, other: other_loc}
    answered = (locs["correct"].facts.groupby(["model", "fact_id"]).size()).to_dict()
    cells: dict[tuple, dict] = {}

    def put(model, measure, name, text):
        cells.setdefault((model, measure), {})[name + (" (the book's)" if name == query_filter else "")] = text

    for name, loc in locs.items():
        cs = loc.consistency(cs_kind)
        cs = cs[cs.method == method]
        for (model, measure), text in claim1_cells(cs, method, cs_kind=cs_kind, static_threshold=static_threshold,
                                                   n_boot=n_boot, seed=seed, chance=False).items():
            put(model, measure, name, text)
        kn, q = loc.neurons[loc.neurons.method == method], loc.queries[loc.queries.method == method]
        mk = strata.matched_k(kn, q, k0=answered, kind=cs_kind).dropna()
        for model, g in mk.groupby("model"):
            ki = C.classify(g[f"{cs_kind}_matched"], static_threshold)
            lo, hi = C.wilson_ci(int(ki.sum()), len(ki))
            put(model, "K_I share at the answered k (matched k)", name, ci_cell(float(ki.mean()), lo, hi, ".0%"))
        for (model, measure), text in claim1_cells(cs, method, cs_kind=cs_kind, static_threshold=static_threshold,
                                                   n_boot=n_boot, seed=seed, share=False).items():
            put(model, measure, name, text)
        if name == "all":
            qa = q.merge(loc.facts[["model", "fact_id", "pattern_index", "correct"]],
                         on=["model", "fact_id", "pattern_index"], how="left")
            qa["correct"] = qa["correct"].fillna(False).astype(bool)
            for r in strata.within_template(kn, qa, n_boot=n_boot, seed=seed).itertuples():
                put(r.model, f"within template: J(answered) − J(unanswered) ({r.templates} templates)", name,
                    ci_cell(r.diff, r.ci_low, r.ci_high, "+.3f"))
    rows = [{"model": m, "measure": meas, **v} for (m, meas), v in cells.items()]
    return pd.DataFrame(rows).fillna("–")


def claim1_cells(cs: pd.DataFrame, method: str, *, cs_kind: str, static_threshold: float, n_boot: int, seed: int,
                 share: bool = True, chance: bool = True) -> dict[tuple[str, str], str]:
    """``{(model, measure): cell}`` of claim 1 for ``method`` alone, from its consistency rows ``cs``: the CS2
    K_I share at the static θ (Wilson interval) and the population mean delta_j (two-level interval over
    relations, their number in brackets)."""
    cs = cs[cs.method == method]
    out = {}
    if share:
        tab = C.ki_share_table(cs, kind=cs_kind, static=static_threshold, otsu=False, n_boot=n_boot, seed=seed)
        for r in tab[tab.method == method].itertuples():
            out[(r.model, f"K_I share, CS2 < θ ({r.n_facts} facts)")] = ci_cell(r.share_ki, r.ci_low, r.ci_high, ".0%")
    if chance:
        summary = strata.chance_summary(cs, n_boot=n_boot, seed=seed)
        for r in summary[summary.method == method].itertuples():
            out[(r.model, "mean delta_j [two-level CI] (relations)")] = (
                ci_cell(r.mean_delta, r.ci_low, r.ci_high, "+.3f") + f" ({r.n_relations})")
    return out


def rule_sensitivity(data, other_loc, method: str, *, paper_rule: str, rule: str, steps: int | None,
                     tol: float | None, cs_kind: str, static_threshold: float, n_boot: int, seed: int) -> pd.DataFrame:
    """Claim 1 under the book's path rule (``data``) and under ``paper_rule`` (``other_loc``: the same facts and
    queries, ``method`` only): per model, :func:`claim1_cells` under each rule, and the mean Jaccard index of
    each query's two KN sets (with the number of queries)."""
    book = f"adaptive, tol {tol:g}" if rule == "adaptive" else f"{rule}-{steps}"
    cells: dict[tuple, dict] = {}
    for name, loc in ((f"{book} (the book's)", data), (paper_rule, other_loc)):
        for key, text in claim1_cells(loc.consistency(cs_kind), method, cs_kind=cs_kind,
                                      static_threshold=static_threshold, n_boot=n_boot, seed=seed).items():
            cells.setdefault(key, {})[name] = text
    keys = ["model", "fact_id", "pattern_index"]
    sets = [loc.neurons[loc.neurons.method == method].groupby(keys)[["layer", "neuron"]]
            .apply(lambda g: set(zip(g.layer, g.neuron))) for loc in (data, other_loc)]
    queries = data.queries[data.queries.method == method].set_index(keys).index
    for model in queries.get_level_values("model").unique():
        mine = [k for k in queries if k[0] == model]
        pairs = [(sets[0].get(k, set()), sets[1].get(k, set())) for k in mine]
        js = [path_points.jaccard(a, b) for a, b in pairs]  # two empty sets agree (1.0)
        cells.setdefault((model, f"KN-set Jaccard between the rules ({len(js)} queries)"), {})[paper_rule] = (
            fmt(float(np.mean(js)), ".2f") if js else "–")
    rows = [{"model": m, "measure": meas, **v} for (m, meas), v in cells.items()]
    return pd.DataFrame(rows).fillna("–")


# ------------------------------------------------------------- claim 1 on the fact (chance-corrected)


def chance_claim(chance: pd.DataFrame, model: str) -> dict:
    """Claim 1's measurement for one model from :func:`kqlib.paper.strata.chance_summary` (row "all": each
    fact's delta_j averaged over methods): the population mean delta_j with its two-level interval; n = the
    relations (the resampling unit); the share not above chance beside it in the detail."""
    if (model, "all") not in chance.index:
        return dict(why_not="no fact has a chance null (too few facts of a relation share its templates)")
    r = chance.loc[(model, "all")]
    return dict(estimate=r.mean_delta, low=r.ci_low, high=r.ci_high, n=int(r.n_relations),
                unit="relations", detail=f"{int(r.n_facts)} facts ({int(r.n_undefined)} without a null); not above "
                f"chance under every method: {ci_cell(r.share_ki, r.ki_low, r.ki_high, '.0%')}")


def reach_why_not(reach: pd.DataFrame, model: str, threshold: float) -> str | None:
    """"not measurable here" for the CS2 share when fewer facts can fall below θ than a "holds" needs."""
    if (model, INTERSECTION_METHOD) not in reach.index:
        return None
    r = reach.loc[(model, INTERSECTION_METHOD)]
    if r.measurable or r.needed is None or not np.isfinite(r.needed):  # no count: too few facts, judged as such
        return None
    return (f"only {int(r.can_reach)} of {int(r.n_facts)} facts can fall below θ = {threshold:g} at all (CS2 ≥ 1/k: "
            f"k ≥ {int(np.floor(1 / threshold)) + 1} phrasings needed); 'holds' needs {int(r.needed)} K_I facts")


def matched_k_table(data, k0: int = strata.K0, *, cs_kind: str, static_threshold: float) -> pd.DataFrame:
    """CS2 at matched k: each fact's mean CS2 over its k0-subsets of phrasings, K_I share at the static θ with
    its Wilson interval per model × method; facts with fewer than k0 phrasings are counted and left out."""

    mk = strata.matched_k(data.neurons, data.queries, k0=k0, kind=cs_kind)
    col, rows = f"{cs_kind}_k{k0}", []
    for (model, method), g in mk.groupby(["model", "method"]):
        ok = g[col].dropna()
        ki = classify(ok, static_threshold)
        lo, hi = wilson_ci(int(ki.sum()), len(ki))
        rows.append(dict(model=model, method=method, k0=k0, facts=len(ok), left_out=int(len(g) - len(ok)),
                         mean_cs=float(ok.mean()) if len(ok) else np.nan,
                         share_ki=ci_cell(float(ki.mean()) if len(ki) else np.nan, lo, hi, ".0%")))
    return pd.DataFrame(rows, columns=["model", "method", "k0", "facts", "left_out", "mean_cs", "share_ki"])


def chance_views(cs: pd.DataFrame, data=None, *, cs_kind: str, static_threshold: float, n_boot: int,
                 seed: int) -> dict[str, pd.DataFrame]:
    """The chapter's claim-1 tables: chance summary, power by k, CS2 reach, K_I share by k, per relation, and
    (with ``data``) the CS2 at matched k."""

    per_rel = (cs.dropna(subset=["delta_j"]).groupby(["model", "method", "relation"])
               .agg(facts=("fact_id", "nunique"), k=("k_null", "mean"), mean_delta=("delta_j", "mean"),
                    not_above_chance=("p_null", lambda v: float((v >= 0.05).mean())),
                    ki_cs2=(cs_kind, lambda v: share_inconsistent(v, static_threshold))).reset_index())
    return dict(chance=strata.chance_summary(cs, n_boot=n_boot, seed=seed), power=strata.power_by_k(cs),
                reach=strata.reach_table(cs, static_threshold, cs_kind),
                by_k=strata.ki_by_k(cs, static_threshold, cs_kind), per_relation=per_rel,
                matched=matched_k_table(data, cs_kind=cs_kind, static_threshold=static_threshold)
                if data is not None else None)


def pair_type_table(loc, method: str, *, n_boot: int, seed: int) -> pd.DataFrame:
    """"What do knowledge neurons belong to?": :func:`kqlib.paper.strata.pair_types` on every phrasing of the
    book's facts (``loc``: the localization under the "all" filter, answered or not; ``method``'s KN sets)."""
    q = loc.queries.merge(loc.facts[["model", "fact_id", "pattern_index", "correct"]],
                          on=["model", "fact_id", "pattern_index"], how="left")
    q["correct"] = q["correct"].fillna(False).astype(bool)
    tab = strata.pair_types(loc.neurons[loc.neurons.method == method], q[q.method == method], n_boot=n_boot,
                            seed=seed)
    return tab


def pair_type_figure(tab: pd.DataFrame):
    """Mean KN-set Jaccard per pair type (95 % interval over facts), one panel per model."""
    models = list(dict.fromkeys(tab.model))
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(5.2 * max(len(models), 1), 3.4), squeeze=False,
                             sharex=True)
    for ax, m in zip(axes[0], models):
        part = tab[tab.model == m].iloc[::-1]
        y = np.arange(len(part))
        err = np.vstack([part["mean"] - part.ci_low, part.ci_high - part["mean"]]).clip(min=0)
        ax.errorbar(part["mean"], y, xerr=np.nan_to_num(err), fmt="o", color="#34495e", capsize=3)
        ax.set_yticks(y, [f"{t} ({n})" for t, n in zip(part.pair_type, part.facts)])
        ax.set_xlabel("mean KN-set Jaccard (95 % CI over facts)")
        ax.set_title(f"{m}, {part.method.iloc[0] if len(part) else ''}")
        ax.set_xlim(left=0)
    fig.suptitle("What do knowledge neurons belong to? (facts per row in brackets)")
    fig.tight_layout()
    return fig


# What the notebook calls besides this module's own functions (it imports this module and Chapter only).
from kqlib.book.report import records  # noqa: E402,F401
from kqlib.paper.consistency import (  # noqa: E402,F401
    ki_share_table,
    ordered_shares,
    per_relation_table,
    table1,
    theta_table,
    welch_table,
)
