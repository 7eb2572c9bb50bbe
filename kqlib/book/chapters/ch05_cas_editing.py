"""Chapter 05 (CAS editing): classes, the edit runs, Table 3, gains, the β ablation, the chapter's numbers.

The notebook imports this module (as ``K``) and :class:`~kqlib.book.chapter.Chapter` only. Functions take models,
frames, ``data`` (a :class:`~kqlib.book.chapter.Localized`) and plain keyword-only values named as the chapter's
parameters (the notebook passes them with ``ch.call``), and return frames, figures and claim measurements (:func:`kqlib.book.claims.verdicts.measurement`); they never hold
the ``Chapter``: the notebook judges the measurements with ``ch.claims_from``."""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from kqlib.book.claims.verdicts import measurement
from kqlib.book.profiles import rule_kw
from kqlib.book.report import finite_or_none
from kqlib.paper import cas_editing as CE
from kqlib.paper import editing
from kqlib.paper.consistency import class_labels as labels
from kqlib.paper.consistency import otsu_threshold
from kqlib.paper.intervals import unit_interval
from kqlib.paper.stats import bootstrap_ci, ci_cell, fmt
from kqlib.paper.strata import within_stratum_gap

# ------------------------------------------------------------------------ chapter 05: CAS editing

SEL_ORDER = ["N_i", "N_g", "cas"]
GROUPS = ["all", "K_C", "K_I"]


def cas_classes(cs: pd.DataFrame, *, cs_kind: str, static_threshold: float) -> tuple[pd.DataFrame, dict, dict]:
    """``cs`` with ``class`` (static θ) and ``class_otsu`` (Otsu θ per model), K_none for facts without any
    KN; returns (cs, {(model, fact): class}, {model: Otsu θ})."""

    cs = cs.copy()
    usable = cs[cs.union_size > 0]
    otsu = {m: otsu_threshold(g[cs_kind]) for m, g in usable.groupby("model")}
    cs["class"] = labels(cs[cs_kind], static_threshold, cs.union_size)
    cs["class_otsu"] = [labels([v], otsu.get(m, np.nan), [u])[0]
                        for m, v, u in zip(cs.model, cs[cs_kind], cs.union_size)]
    return cs, {(r.model, r.fact_id): r["class"] for _, r in cs.iterrows()}, otsu


class CasEdits:
    """Every fact edited with every selection (``kqlib.paper.cas_editing.run_cas_editing``); the evaluation caches
    are kept so that the β ablation re-evaluates only new neuron sets."""

    def __init__(self, lms, data, classes: Mapping, *, beta1: float, beta2: float, method: str, site: str,
                 t_threshold: float, cas_method: str, cas_threshold: float, n_heldout: int, split: str,
                 query_filter: str, n_unrelated: int, lambda1: float, lambda2: float, n_edit_facts: int,
                 n_ppl_texts: int, seed: int, rule: str, steps: int | None = None, tol: float | None = None):
        self.lms, self.data, self.beta1, self.beta2 = lms, data, beta1, beta2
        self.edit_kw = dict(method=method, **rule_kw(rule=rule, steps=steps, tol=tol), site=site, t=t_threshold,
                            cas_method=cas_method, cas_threshold=cas_threshold, n_heldout=n_heldout, split=split,
                            query_filter=query_filter, n_unrelated=n_unrelated, lambda1=lambda1, lambda2=lambda2,
                            seed=seed, n_facts=n_edit_facts or None, ppl_texts=editing.DEFAULT_PPL_TEXTS[:n_ppl_texts])
        self.eval_caches = {lm.name: {} for lm in lms}
        self.memos = {lm.name: {} for lm in lms}
        t0 = time.time()
        self.edits = pd.concat([CE.run_cas_editing(lm, data.datasets[lm.name], beta1=beta1, beta2=beta2,
                                                   eval_cache=self.eval_caches[lm.name],
                                                   edit_memo=self.memos[lm.name], **self.edit_kw) for lm in lms],
                               ignore_index=True)
        self.edits["class"] = [classes.get((m, f), "unclassified")
                               for m, f in zip(self.edits.model, self.edits.fact_id)]
        self.seconds = time.time() - t0
        e = self.edits
        print(f"{len(e)} edits of {e.fact_id.nunique()} facts ({int((~e.reused).sum())} evaluated, the rest "
              f"repeat an identical neuron set) in {self.seconds:.0f} s; usable facts per model: "
              f"{e.groupby('model').fact_id.nunique().to_dict()}")

    def sizes(self) -> pd.DataFrame:
        return (self.edits[self.edits.task == "erase"].groupby(["model", "selection"]).n_neurons
                .agg(["mean", "median", "min", "max"]).reindex(SEL_ORDER, level="selection").round(1))

    def ablation(self, *, beta2_grid: Sequence[float], n_boot: int, seed: int) -> pd.DataFrame:
        """CAS with β1 fixed and β2 over ``beta2_grid``: mean metrics per (model, task, β2), Avg CI over facts."""

        abl = [self.edits[self.edits.selection == "cas"]]
        for b2 in beta2_grid:
            if float(b2) == float(self.beta2):
                continue
            abl.append(pd.concat([CE.run_cas_editing(lm, self.data.datasets[lm.name], selections=("cas",),
                                                     beta1=self.beta1, beta2=float(b2),
                                                     eval_cache=self.eval_caches[lm.name],
                                                     edit_memo=self.memos[lm.name], **self.edit_kw)
                                  for lm in self.lms], ignore_index=True))
        rows = pd.concat(abl, ignore_index=True)
        rows = rows[rows.beta2.isin([float(b) for b in beta2_grid])]
        out = []
        for (model, task, b2), g in rows.groupby(["model", "task", "beta2"]):
            row = dict(model=model, task=task, beta2=b2, facts=len(g), neurons=g.n_neurons.mean())
            for m in ("rel", "gen", "loc", "avg", "dppl"):
                row[m] = g[m].mean()
            row["avg_low"], row["avg_high"] = bootstrap_ci(g["avg"], n_boot=n_boot, seed=seed)
            out.append(row)
        return pd.DataFrame(out)

    def lambda2_sweep(self, *, lambda2_grid: Sequence[float]) -> pd.DataFrame:
        """Updates with λ2 over ``lambda2_grid`` (λ1 fixed), every selection: per (model, selection, λ2) the
        facts, mean Rel, Gen, Loc, Avg, the median ΔPPL and the share of updates whose perplexity overflowed."""

        lambda2 = self.edit_kw["lambda2"]
        frames = [self.edits[self.edits.task == "update"].assign(lambda2=float(lambda2))]
        for l2 in lambda2_grid:
            if float(l2) == float(lambda2):
                continue
            kw = dict(self.edit_kw, lambda2=float(l2))
            frames.append(pd.concat([CE.run_cas_editing(lm, self.data.datasets[lm.name], tasks=("update",),
                                                        beta1=self.beta1, beta2=self.beta2,
                                                        eval_cache=self.eval_caches[lm.name],
                                                        edit_memo=self.memos[lm.name], **kw)
                                     for lm in self.lms], ignore_index=True).assign(lambda2=float(l2)))
        rows = pd.concat(frames, ignore_index=True)
        rows = rows[rows.lambda2.isin([float(x) for x in lambda2_grid])]
        return (rows.groupby(["model", "selection", "lambda2"])
                .agg(facts=("fact_id", "nunique"), rel=("rel", "mean"), gen=("gen", "mean"), loc=("loc", "mean"),
                     avg=("avg", "mean"), dppl_median=("dppl", "median"),
                     ppl_overflow=("dppl", lambda s: float(s.isna().mean())))
                .reset_index())


def table3(edits: pd.DataFrame, classes: Mapping, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Table 3: means and bootstrap CIs per model, task, fact group and selection, in the page's order."""
    t3 = CE.table3(edits, classes=classes, n_boot=n_boot, seed=seed)
    t3["selection"] = pd.Categorical(t3.selection, SEL_ORDER, ordered=True)
    t3["group"] = pd.Categorical(t3.group, GROUPS, ordered=True)
    return t3.sort_values(["model", "task", "group", "selection"]).reset_index(drop=True)


def table3_view(t3: pd.DataFrame):
    view = pd.DataFrame({
        "model": t3.model, "task": t3.task, "group": t3.group.astype(str), "selection": t3.selection.astype(str),
        "facts": t3.facts, "neurons": t3.n_neurons.round(1),
        **{lab: [ci_cell(r[m], r[m + "_low"], r[m + "_high"], "+.3g" if m == "dppl" else ".2f")
                 if np.isfinite(r[m]) else "–" for _, r in t3.iterrows()]
           for lab, m in (("Rel", "rel"), ("Gen", "gen"), ("Loc", "loc"), ("Avg", "avg"), ("ΔPPL", "dppl"))}})
    return view.style.hide(axis="index")


def _ci_points(ax, frame, x, hue, y, order, hue_order, palette=None, width=0.6):

    palette = palette or sns.color_palette("deep", len(hue_order))
    step = width / max(len(hue_order), 1)
    for j, h in enumerate(hue_order):
        part = frame[frame[hue] == h].set_index(x).reindex(order)
        xs = np.arange(len(order)) - width / 2 + step * (j + 0.5)
        ok = np.isfinite(part[y].to_numpy(float))
        lo = np.clip((part[y] - part[f"{y}_low"]).to_numpy(float), 0, None)
        hi = np.clip((part[f"{y}_high"] - part[y]).to_numpy(float), 0, None)
        ax.errorbar(xs[ok], part[y].to_numpy(float)[ok], yerr=[lo[ok], hi[ok]], fmt="o", capsize=3,
                    color=palette[j], label=str(h))
    ax.set_xticks(range(len(order)), order)


def avg_figure(t3: pd.DataFrame, models):

    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.8 * len(models)), squeeze=False, sharey=True)
    for i, m in enumerate(models):
        for ax, task in zip(axes[i], ("erase", "update")):
            part = t3[(t3.model == m) & (t3.task == task)].astype({"selection": str, "group": str})
            _ci_points(ax, part, "selection", "group", "avg", SEL_ORDER, GROUPS)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{m}: {task}")
            ax.set_ylabel("Avg = (Rel + Gen + Loc) / 3")
            ax.legend(title="facts", fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def metrics_figure(t3: pd.DataFrame, models):

    long = []
    for m in ("rel", "gen", "loc"):
        sub = t3[t3.group == "all"][["model", "task", "selection", m, f"{m}_low", f"{m}_high"]].copy()
        sub.columns = ["model", "task", "selection", "value", "value_low", "value_high"]
        long.append(sub.assign(metric={"rel": "Rel", "gen": "Gen", "loc": "Loc"}[m]))
    long = pd.concat(long, ignore_index=True).astype({"selection": str})
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False, sharey=True)
    for i, m in enumerate(models):
        for ax, task in zip(axes[i], ("erase", "update")):
            part = long[(long.model == m) & (long.task == task)]
            _ci_points(ax, part, "metric", "selection", "value", ["Rel", "Gen", "Loc"], SEL_ORDER,
                       palette=sns.color_palette("Set2", 3))
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{m}: {task}, all facts")
            ax.legend(title="selection", fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def pooled_per_fact(edits: pd.DataFrame) -> pd.DataFrame:
    """Erase and update averaged PER FACT and selection (model "all", task "both", fact_id "model/fact"), so a
    fact counts once in a pooled interval (pooling the two tasks' rows as separate units counts it twice)."""
    metrics = ["rel", "gen", "loc", "avg", "dppl"]
    g = (edits.groupby(["model", "fact_id", "selection"], sort=False)[metrics].mean().reset_index())
    return g.assign(fact_id=g.model + "/" + g.fact_id, model="all", task="both")


def cas_gains(edits: pd.DataFrame, classes: Mapping, *, n_boot: int, seed: int) -> pd.DataFrame:
    """CAS − baseline per (model, task) and pooled ("all", "both": tasks averaged per fact), paired by fact,
    bootstrap CI over facts, for Avg, Gen, Loc and Rel, overall and per class."""

    pooled = pooled_per_fact(edits)
    pooled_classes = {("all", f"{m}/{f}"): c for (m, f), c in classes.items()}
    frames = []
    for metric in ("avg", "gen", "loc", "rel"):
        g1 = CE.paired_gains(edits, metric=metric, classes=classes, n_boot=n_boot, seed=seed)
        g2 = CE.paired_gains(pooled, metric=metric, classes=pooled_classes, n_boot=n_boot, seed=seed)
        frames.append(pd.concat([g1, g2], ignore_index=True).assign(metric=metric))
    return pd.concat(frames, ignore_index=True)


def gains_view(gains: pd.DataFrame):
    v = gains[gains.metric == "avg"].copy()
    v["CAS − baseline"] = ["–" if not np.isfinite(r.gain) else f"{r.gain:+.3f} [{r.gain_low:+.3f}, {r.gain_high:+.3f}]"
                           for r in v.itertuples()]
    return v[["model", "task", "baseline", "group", "facts", "cas", "baseline_value", "CAS − baseline"]].style.format(
        {"cas": "{:.3f}", "baseline_value": "{:.3f}"}, na_rep="–").hide(axis="index")


def fact_gains(edits: pd.DataFrame, classes: Mapping, metric: str = "avg", baseline: str = "N_i") -> pd.DataFrame:
    """Per (model, fact) edited with both selections: gain = ``metric``(CAS) − ``metric``(baseline), erase and
    update averaged per fact; with relation, n_edited (|E|, the fact's edited queries) and class."""
    cols = ["model", "fact_id", "relation", "n_edited", "class", "cas", baseline, "gain"]
    if not len(edits) or not {"cas", baseline} <= set(edits.selection):
        return pd.DataFrame(columns=cols)
    per = edits.groupby(["model", "fact_id", "selection"], sort=True)[metric].mean().unstack()[["cas", baseline]]
    per = per.dropna().reset_index()
    info = edits.drop_duplicates(["model", "fact_id"]).set_index(["model", "fact_id"])
    keys = list(zip(per.model, per.fact_id))
    per["relation"] = [info.relation.get(k) for k in keys]
    per["n_edited"] = [int(info.n_edited_queries.get(k)) for k in keys]
    per["class"] = [classes.get(k, "unclassified") for k in keys]
    per["gain"] = per["cas"] - per[baseline]
    return per[cols]


def gain_by_e(edits: pd.DataFrame, classes: Mapping, *, n_boot: int, seed: int) -> pd.DataFrame:
    """CAS − N_i (Avg, tasks averaged per fact) by |E| (the fact's edited queries) and class, models pooled:
    facts, relations, mean gain with a bootstrap CI over facts. ``left_out``: |E| = 1, where CAS = N_i = N_g by
    construction (gain 0), so those facts do not enter the class comparison."""

    fg = fact_gains(edits, classes)
    rows = []
    for e, g in fg.groupby("n_edited", sort=True):
        for group in GROUPS:
            sub = g if group == "all" else g[g["class"] == group]
            lo, hi = bootstrap_ci(sub.gain, n_boot=n_boot, seed=seed)
            rows.append(dict(n_edited=int(e), group=group, facts=len(sub), relations=int(sub.relation.nunique()),
                             gain=float(sub.gain.mean()) if len(sub) else np.nan, gain_low=lo, gain_high=hi,
                             left_out=bool(e < 2)))
    return pd.DataFrame(rows, columns=["n_edited", "group", "facts", "relations", "gain", "gain_low", "gain_high",
                                       "left_out"])


def small_kc_claim(edits: pd.DataFrame, classes: Mapping, *, n_boot: int, seed: int) -> dict:
    """The reviewer's "CAS gains less on K_C facts", stratified: gain over N_i (Avg) of K_I minus K_C facts
    inside each (model, relation) holding both classes (the relation sets k and with it the class), mean over
    those strata with a bootstrap over relations (:func:`kqlib.paper.strata.within_stratum_gap`). Facts with
    |E| = 1 are left out (their gain is 0 by construction) and counted."""
    fg = fact_gains(edits, classes)
    one, keep = fg[fg.n_edited < 2], fg[fg.n_edited >= 2]
    left = (f"{len(one)} fact(s) with |E| = 1 left out ({int((one['class'] == 'K_C').sum())} K_C, "
            f"{int((one['class'] == 'K_I').sum())} K_I): CAS = N_i = N_g there")
    r = within_stratum_gap(keep.gain, keep["class"], list(zip(keep.model, keep.relation)), "K_I", "K_C",
                           clusters=keep.relation, n_boot=n_boot, seed=seed, stratum_name="relation",
                           unit_name="fact")
    if "why_not" in r:
        return dict(why_not=f"{r['why_not']} among the facts with |E| ≥ 2; {left}")
    ki, kc = keep[keep["class"] == "K_I"].gain, keep[keep["class"] == "K_C"].gain
    return dict(estimate=r["estimate"], low=r["low"], high=r["high"], n=r["n"], unit="relations",
                detail=f"within-relation K_I − K_C gain of {r['n_strata']} (model, relation) strata with both "
                       f"classes; pooled, unstratified: K_I {ki.mean():+.3f} (n={ki.size}) − K_C {kc.mean():+.3f} "
                       f"(n={kc.size}); {left}")


def beta_figure(abl: pd.DataFrame, beta1: float):

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=False)
    ax = axes[0]
    for (model, task), g in abl.groupby(["model", "task"]):
        g = g.sort_values("beta2")
        ax.plot(g.beta2, g.avg, marker="o", label=f"{model}, {task}")
        ax.fill_between(g.beta2, g.avg_low, g.avg_high, alpha=0.15)
    ax.set_xlabel("β2 (β1 = %g)" % beta1)
    ax.set_ylabel("Avg")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("CAS: Avg vs. β2")
    ax.legend(fontsize=8)
    ax = axes[1]
    for (model, task), g in abl[abl.task == "erase"].groupby(["model", "task"]):
        g = g.sort_values("beta2")
        ax.plot(g.beta2, g.neurons, marker="o", label=model)
    ax.set_xlabel("β2")
    ax.set_ylabel("neurons selected (mean)")
    ax.set_title("CAS: selection size vs. β2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cas_numbers(lms, edits: pd.DataFrame, t3: pd.DataFrame, gains: pd.DataFrame, abl: pd.DataFrame,
                classes: Mapping, *, beta2: float, lambda2: float, n_boot: int, seed: int) -> tuple[dict, list[dict]]:
    """Chapter 05's headline numbers and its claim measurements (for ``ch.claims_from``)."""
    claims: list[dict] = []
    lm0 = lms[0].name

    def gain(baseline, metric="avg", group="all", model="all", task="both"):
        r = gains[(gains.metric == metric) & (gains.baseline == baseline) & (gains.group == group)
                  & (gains.model == model) & (gains.task == task)]
        if not len(r) or not np.isfinite(r.gain.iloc[0]):
            return None, None, None, 0
        r = r.iloc[0]
        return float(r.gain), finite_or_none(r.gain_low), finite_or_none(r.gain_high), int(r.facts)

    def t3_value(model, task, sel, metric="avg", group="all"):
        r = t3[(t3.model == model) & (t3.task == task) & (t3.selection == sel) & (t3.group == group)]
        return finite_or_none(r[metric].iloc[0]) if len(r) else None

    nums: dict[str, Any] = {
        "n_models": len(lms), "model0": lm0,
        "n_facts_edited": int(edits.groupby("model").fact_id.nunique().sum()) if len(edits) else 0,
        "n_edits": int(len(edits)),
        "n_kc_edited": int(edits[edits["class"] == "K_C"].groupby("model").fact_id.nunique().sum()),
        "n_ki_edited": int(edits[edits["class"] == "K_I"].groupby("model").fact_id.nunique().sum()),
        "edited_queries_per_fact": finite_or_none(edits.drop_duplicates(["model", "fact_id"]).n_edited_queries.mean()),
    }
    for sel in SEL_ORDER:
        nums[f"neurons_{sel}"] = finite_or_none(edits[edits.selection == sel].n_neurons.mean())
    for task in ("erase", "update"):
        for sel in SEL_ORDER:
            nums[f"avg_{task}_{sel}_model0"] = t3_value(lm0, task, sel)
    er = edits[edits.task == "erase"]
    dppl = er.pivot_table(index=["model", "fact_id"], columns="selection", values="dppl")
    for base in ("N_i", "N_g"):
        for group in GROUPS:
            g, lo, hi, n = gain(base, group=group)
            key = f"gain_{base}" + ("" if group == "all" else f"_{group}")
            nums[key], nums[key + "_low"], nums[key + "_high"], nums[key + "_pairs"] = g, lo, hi, n
        for metric in ("gen", "loc"):
            nums[f"gain_{base}_{metric}"] = gain(base, metric=metric)[0]
        nums[f"dppl_diff_{base}"] = (finite_or_none((dppl["cas"] - dppl[base]).mean())
                                     if {"cas", base} <= set(dppl.columns) else None)
    upd = edits[edits.task == "update"]
    nums["n_update_edits"] = int(len(upd))
    nums["update_rel_mean"] = finite_or_none(upd.rel.mean()) if len(upd) else None
    nums["update_dppl_median"] = finite_or_none(upd.dppl.median()) if len(upd) else None
    nums["update_ppl_before"] = finite_or_none(upd.ppl_before.median()) if len(upd) else None
    best = abl.groupby("beta2").avg.mean().dropna() if len(abl) else pd.Series(dtype=float)  # all-NaN: no best
    nums["best_beta2"] = finite_or_none(best.idxmax()) if len(best) else None
    nums["avg_beta2_0"] = finite_or_none(best.get(0.0, np.nan))
    nums["avg_beta2_main"] = finite_or_none(best.get(float(beta2), np.nan))
    for k in list(nums):
        if k.startswith("gain_") and not k.endswith("_pairs"):
            nums[k + "_text"] = fmt(nums[k], "+.3f")
        if k.startswith("dppl_diff_"):
            nums[k + "_text"] = fmt(nums[k], "+.3g")
    nums["update_rel_mean_text"] = fmt(nums["update_rel_mean"], ".2f", "no update edit")
    nums["update_dppl_median_text"] = fmt(nums["update_dppl_median"], ".3g",
                                          "infinite (overflow)" if len(upd) else "no update edit")
    nums["update_ppl_before_text"] = fmt(nums["update_ppl_before"], ".3g", "no update edit")
    nums["lambda2"] = float(lambda2)
    nums["lambda2_text"] = f"{float(lambda2):g}"
    for k in ("avg_erase_cas_model0", "avg_erase_N_i_model0", "avg_erase_N_g_model0", "avg_update_cas_model0",
              "avg_update_N_i_model0", "avg_update_N_g_model0", "best_beta2", "avg_beta2_0", "avg_beta2_main"):
        nums[k + "_text"] = fmt(nums[k], ".2f" if not k.startswith("best") else "g")
    for sel in SEL_ORDER:
        nums[f"neurons_{sel}_text"] = fmt(nums[f"neurons_{sel}"], ".1f")
    nums["edited_queries_per_fact_text"] = fmt(nums["edited_queries_per_fact"], ".1f")

    # claims: pooled over models and tasks (tasks averaged per fact); the relation is the unit when there are
    # enough relations (kqlib.paper.intervals.unit_interval), else the fact
    for cid, base, metric in (("cas_vs_ni", "N_i", "avg"), ("cas_vs_ng", "N_g", "avg"),
                              ("cas_gain_generalization", "N_i", "gen")):
        fg = fact_gains(edits, classes, metric=metric, baseline=base)
        if not len(fg):
            claims.append(measurement(cid, "all", why_not="no fact edited with both selections"))
            continue
        m = unit_interval(fg.gain, fg.relation, n_boot=n_boot, seed=seed)
        claims.append(measurement(cid, "all", m["estimate"], m["low"], m["high"], m["n"], unit=m["unit"],
                 detail=f"{'tasks averaged per fact' if metric == 'avg' else 'Gen only'}; models pooled; "
                        f"{len(fg)} facts; {m['detail']}"))
    llama3 = [m for m in (lm.name for lm in lms) if "llama-3-8b" in m.lower()]
    if llama3:
        part = edits[(edits.model == llama3[0]) & (edits.task == "erase")]
        wide = part.pivot_table(index=["relation", "fact_id"], columns="selection", values="avg")
        best = max(("N_i", "N_g"), key=lambda s: wide[s].mean())
        d = (wide["cas"] - wide[best]).dropna()
        m = unit_interval(d.to_numpy(float), d.index.get_level_values("relation"), n_boot=n_boot, seed=seed)
        claims.append(measurement("cas_llama3_erasure", llama3[0], m["estimate"], m["low"], m["high"], m["n"], unit=m["unit"],
                 detail=f"best baseline {best} {wide[best].mean():.2f} → CAS {wide['cas'].mean():.2f}; "
                        f"{m['detail']}"))
    else:
        claims.append(measurement("cas_llama3_erasure", "all", why_not="LLaMA3-8b is not in this profile (use --profile paper)",
                 detail=f"{lm0}: N_i {nums['avg_erase_N_i_model0_text']}, N_g {nums['avg_erase_N_g_model0_text']}"
                        f" → CAS {nums['avg_erase_cas_model0_text']}"))
    claims.append(measurement("cas_gain_small_kc", "all", **small_kc_claim(edits, classes, n_boot=n_boot, seed=seed)))
    return nums, claims


# What the notebook calls besides this module's own functions (it imports this module and Chapter only).
from kqlib.book.report import records  # noqa: E402,F401
