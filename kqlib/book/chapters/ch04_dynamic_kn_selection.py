"""Chapter 04 (dynamic KN selection, Figure 5): choosing the queries, running the synapse experiment per model, the
heatmap and distributions, the tables and tests over facts, the chapter's numbers. The experiment itself is
:mod:`kqlib.paper.synapses`. The notebook imports this module (as ``K``) and
:class:`~kqlib.book.chapter.Chapter` only; functions return claim measurements, never hold the ``Chapter``."""

from __future__ import annotations

import random
import time
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from kqlib.book.claims.verdicts import measurement
from kqlib.errors import TooFewFacts
from kqlib.paper.consistency import class_label_series as class_labels
from kqlib.paper.intervals import unit_interval
from kqlib.paper.stats import finite_or_none, fmt, mean_ci_cluster_table, paired_fact_table
from kqlib.paper.synapses import MATCHED, SETS, activation_states, run_synapse_experiment

# ----------------------------------------------------------------------- chapter 04 (Figure 5)

UNIT = ["model", "fact_id", "pattern_index"]


def choose_queries(lms, data, *, kn_method: str, n_queries: int, cs_kind: str, static_threshold: float,
                   seed: int) -> tuple[dict, dict, dict]:
    """Per model: a seeded sample of ``n_queries`` queries with knowledge neurons (method ``kn_method``; ``data``
    its localization), their KN sets and metadata (with the fact's K_C / K_I / K_none label at the static θ)."""

    chosen, kn_sets, metas = {}, {}, {}
    cs = data.consistency(cs_kind)
    labels = dict(zip(zip(cs.model, cs.fact_id), class_labels(cs, static_threshold, cs_kind)))
    for lm in lms:
        t0 = time.time()
        ds = data.datasets[lm.name]
        sets = data.locs[lm.name].sets(kn_method, model=lm.name)
        pool = [q for q in ds.queries if sets.get((q.fact_id, q.pattern_index))]
        if n_queries and len(pool) > n_queries:
            pool = sorted(random.Random(f"{seed}-{lm.name}").sample(pool, n_queries),
                          key=lambda q: (q.fact_id, q.pattern_index))
        chosen[lm.name] = pool
        kn_sets[lm.name] = [sets[(q.fact_id, q.pattern_index)] for q in pool]
        metas[lm.name] = [dict(model=lm.name, relation=q.relation, fact_id=q.fact_id, pattern_index=q.pattern_index,
                               prompt=q.prompt, group=labels.get((lm.name, q.fact_id))) for q in pool]
        print(f"{lm.name}: {len(pool)} of {len(ds.queries)} queries chosen ({time.time() - t0:.0f} s)")
    return chosen, kn_sets, metas


def run_chapter_synapses(lms, chosen, kn_sets, metas, *, kn_method: str, t_threshold: float, synapse_t: float,
                         alphas: Sequence[float], steps: int, site: str, renormalize: bool, mass_matched: bool,
                         seed: int) -> pd.DataFrame:
    """The synapse experiment (:func:`kqlib.paper.synapses.run_synapse_experiment`) on every model's chosen
    queries, with |ΔAct| and |ΔProb|."""
    if not any(chosen.get(lm.name) for lm in lms):  # nothing to scale: a clear stop, not empty tables downstream
        raise TooFewFacts(f"no query has knowledge neurons ({kn_method}, t_threshold={t_threshold}) in "
                          f"{', '.join(lm.name for lm in lms)}: there are no synapses to scale. Rerun with more facts "
                          f"(-p n_facts_per_relation=...) or relations the model answers (kq data --model NAME).")
    frames = []
    for lm in lms:
        t0 = time.time()
        frames.append(run_synapse_experiment(
            lm, chosen[lm.name], kn_sets[lm.name], t=synapse_t, alphas=[float(a) for a in alphas],
            steps=steps, seed=seed, site=site, renormalize=renormalize, meta=metas[lm.name],
            matched=bool(mass_matched)))
        print(f"{lm.name}: {len(chosen[lm.name])} queries in {time.time() - t0:.0f} s")
    syn = pd.concat(frames, ignore_index=True)
    syn["abs_d_act"] = syn.d_act.abs()
    syn["abs_d_prob"] = syn.d_prob.abs()
    return syn


def per_model_overview(syn: pd.DataFrame) -> pd.DataFrame:
    return (syn[syn["set"] == "synapse"].drop_duplicates(UNIT)
            .groupby("model").agg(queries=("query", "size"), facts=("fact_id", "nunique"),
                                  synapses_per_query=("n_entries", "mean"), kns_per_query=("n_kns", "mean"),
                                  mean_p_answer=("p_before", "mean"))
            .round(2))


def heatmap(lm, syn: pd.DataFrame, chosen, kn_sets, *, alphas: Sequence[float], synapse_t: float, steps: int,
            site: str, renormalize: bool, seed: int):
    """Figure 5 (left): the KN activations of the query whose KNs lose the most activation at the smallest α,
    before, after scaling its synapses and after scaling the control. Returns (fig or None, info or None)."""

    alpha = min(float(a) for a in alphas)
    cand = syn[(syn.model == lm.name) & (syn["set"] == "synapse") & (syn.alpha == alpha)].dropna(subset=["d_act"])
    if not len(cand):
        return None, None
    pick = cand.sort_values(["d_act", "fact_id", "pattern_index"]).iloc[0]
    q = chosen[lm.name][int(pick.query)]
    kns = kn_sets[lm.name][int(pick.query)]
    states = activation_states(lm, q.prompt, q.target_id, kns, t=synapse_t, alpha=alpha, steps=steps,
                               seed=seed, site=site, renormalize=renormalize)
    before = states[states.state == "before"].set_index("label").activation
    keep = before.abs().sort_values(ascending=False).index[:40]
    order = states[states.label.isin(keep)].drop_duplicates("label").sort_values(["layer", "neuron"]).label
    mat = states.pivot(index="state", columns="label", values="activation").loc[
        ["before", "synapses", "control"], list(order)]
    mat.index = ["before", f"synapses × {alpha:g}", f"control × {alpha:g}"]
    lim = float(np.abs(mat.to_numpy()).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * mat.shape[1] + 2), 3))
    sns.heatmap(mat, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, ax=ax,
                cbar_kws={"label": "activation at the last position"})
    ax.set_xlabel("knowledge neuron (layer.index)")
    ax.set_ylabel("")
    ax.set_title(f"{lm.name}: “{q.prompt} …” → {q.obj}", fontsize=10)
    p_states = states.drop_duplicates("state").set_index("state").p_answer
    info = dict(prompt=q.prompt, answer=q.obj, n_kns=len(kns), d_act=float(pick.d_act),
                n_synapses=int(pick.n_entries), p_before=float(p_states["before"]),
                p_synapses=float(p_states["synapses"]), p_control=float(p_states["control"]))
    return fig, info


def mass_table(syn: pd.DataFrame) -> pd.DataFrame:
    """Mean entries and attention mass scaled per model and set (one row per query counted once)."""
    part = syn[syn.alpha == syn.alpha.min()]
    return (part.groupby(["model", "set"]).agg(queries=("query", "size"), entries=("n_entries", "mean"),
                                               attention_mass=("mass", "mean")).round(3))


def distribution_figure(syn: pd.DataFrame, models):

    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.8 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        part = syn[syn.model == model].assign(alpha=lambda d: d.alpha.map(lambda a: f"α = {a:g}"))
        sets = [s for s in SETS + (MATCHED,) if s in set(part["set"])]
        for ax, col, label in ((axes[row, 0], "d_act", "ΔAct (KN activations)"),
                               (axes[row, 1], "d_prob", "ΔProb (answer)")):
            data = part.dropna(subset=[col])
            if len(data):
                sns.boxplot(data=data, x="alpha", y=col, hue="set", hue_order=sets, ax=ax,
                            showfliers=False, palette="Set2")
                sns.stripplot(data=data, x="alpha", y=col, hue="set", hue_order=sets, ax=ax,
                              dodge=True, size=3, palette="dark:#333", legend=False)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_title(f"{model}: {label}")
            ax.set_xlabel("")
            ax.set_ylabel(label)
            if col == "d_prob" and len(data) and data[col].max() > 5:
                ax.set_yscale("symlog", linthresh=1)
    fig.tight_layout()
    return fig


MEASURES = ("d_act", "abs_d_act", "d_prob", "abs_d_prob", "act_shift")


def summary_table(syn: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean of every measure per (model, α, set), pooled over queries, 95 % cluster-bootstrap CI over facts
    (n = facts, n_rows = queries), and the flip rate."""

    summary = pd.concat([mean_ci_cluster_table(syn, ["model", "alpha", "set"], m, cluster=["fact_id"],
                                               n_boot=n_boot, seed=seed).assign(measure=m) for m in MEASURES],
                        ignore_index=True)
    flips = syn.groupby(["model", "alpha", "set"])["flipped"].mean().rename("flip_rate").reset_index()
    return summary.merge(flips, how="left", on=["model", "alpha", "set"])


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    cell = summary.apply(lambda r: "–" if not np.isfinite(r["mean"]) else
                         f"{r['mean']:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", axis=1)
    return summary.assign(cell=cell).pivot_table(index=["model", "alpha", "set"], columns="measure", values="cell",
                                                 aggfunc="first")[list(MEASURES)]


def fact_tests(syn: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Wilcoxon synapse vs control on |ΔAct| and |ΔProb|, the FACT as the unit (per-fact means first); ``diff``
    = mean over facts of |effect|(synapses) − |effect|(control) with a bootstrap CI over facts."""

    pairs = [("synapse", "control")] + ([("synapse", MATCHED)] if MATCHED in set(syn["set"]) else [])
    return pd.concat([paired_fact_table(syn, cluster=["fact_id"], column="set", pairs=pairs,
                                        value=v, by=["model", "alpha"], n_boot=n_boot, seed=seed)
                      .assign(measure=v) for v in ("abs_d_act", "abs_d_prob")], ignore_index=True)


def paired_claim(syn: pd.DataFrame, model: str, alpha: float, measure: str, b: str, *, n_boot: int,
                 seed: int) -> dict | None:
    """One model's claim measurement at α: per fact, the mean ``measure`` of its queries with the synapses
    suppressed/enhanced minus with the control set ``b``; mean over facts with its interval and Wilcoxon p in
    the claims' unit (:func:`kqlib.paper.intervals.unit_interval`: relations, facts within, with ≥ 8
    relations, else facts). Adds mean_a, mean_b (means of the per-fact means). None when no fact has both."""

    part = syn[(syn.model == model) & (syn.alpha == alpha) & syn["set"].isin(["synapse", b])]
    per = part.groupby(["relation", "fact_id", "set"])[measure].mean().unstack()
    if not {"synapse", b} <= set(per.columns) or not len(per[["synapse", b]].dropna()):
        return None
    per = per[["synapse", b]].dropna()
    m = unit_interval((per["synapse"] - per[b]).to_numpy(float), per.index.get_level_values("relation"),
                      n_boot=n_boot, seed=seed, test=True)
    return dict(m, mean_a=float(per["synapse"].mean()), mean_b=float(per[b].mean()))


def synapse_numbers(lms, syn: pd.DataFrame, summary: pd.DataFrame, tests: pd.DataFrame, heat_info, *,
                    alphas: Sequence[float], kn_method: str, synapse_t: float, mass_matched: bool, n_boot: int,
                    seed: int) -> tuple[dict, list[dict]]:
    """Chapter 04's headline numbers (first model) and its claim measurements (every model; for ``ch.claims_from``)."""
    claims: list[dict] = []
    alphas = [float(a) for a in alphas]
    a_sup = min(alphas) if min(alphas) < 1 else None
    a_enh = max(alphas) if max(alphas) > 1 else None
    lm0 = lms[0].name
    Sm = summary.set_index(["model", "alpha", "set", "measure"])
    Tt = tests[tests.b == "control"].set_index(["model", "alpha", "measure"])
    Tm = tests[tests.b == MATCHED].set_index(["model", "alpha", "measure"])
    notes: dict[str, str] = {}
    nums: dict = {"n_models": len(lms), "model0": lm0, "kn_method": kn_method, "synapse_t": float(synapse_t)}
    part0 = syn[syn.model == lm0]
    nums["n_queries"] = int(part0[UNIT].drop_duplicates().shape[0])
    nums["n_facts"] = int(part0.fact_id.nunique())
    nums["synapses_per_query"] = finite_or_none(part0[part0["set"] == "synapse"].drop_duplicates(UNIT).n_entries.mean())
    nums["kns_per_query"] = finite_or_none(part0.drop_duplicates(UNIT).n_kns.mean())
    for tag, a in (("sup", a_sup), ("enh", a_enh)):
        nums[f"alpha_{tag}"] = a
        for measure, short in (("d_act", "act"), ("d_prob", "prob"), ("abs_d_act", "absact"),
                               ("abs_d_prob", "absprob")):
            for s, sshort in (("synapse", "syn"), ("control", "ctrl")):
                key = f"{short}_{sshort}_{tag}"
                if a is None or (lm0, a, s, measure) not in Sm.index:
                    nums[key], nums[f"{key}_ci"] = None, [None, None]
                    notes[key] = f"no α {'< 1' if tag == 'sup' else '> 1'} in alphas" if a is None else "no rows"
                    continue
                r = Sm.loc[(lm0, a, s, measure)]
                nums[key] = finite_or_none(r["mean"])
                nums[f"{key}_ci"] = [finite_or_none(r.ci_low), finite_or_none(r.ci_high)]
                if nums[key] is None:
                    notes[key] = "no query with a defined value"
        for measure, short in (("d_act", "act"), ("d_prob", "prob")):
            pkey, tkey = f"p_{short}_{tag}", (lm0, a, f"abs_{measure}")
            nums[pkey] = finite_or_none(Tt.loc[tkey, "p"]) if a is not None and tkey in Tt.index else None
            if nums[pkey] is None:
                notes[pkey] = Tt.loc[tkey, "note"] if a is not None and tkey in Tt.index else "no such α"
        flip = syn[(syn.model == lm0) & (syn.alpha == a) & (syn["set"] == "synapse")].flipped if a is not None else []
        nums[f"flip_syn_{tag}"] = finite_or_none(np.mean(flip)) if len(flip) else None
    nums["heat_prompt"] = heat_info["prompt"] if heat_info else None
    nums["heat_d_act"] = heat_info["d_act"] if heat_info else None
    for k in [k for k in list(nums) if k.startswith(("act_", "prob_", "absact_", "absprob_", "p_", "flip_",
                                                     "heat_d_act")) and not k.endswith("_ci")]:
        spec = ".1e" if k.startswith("p_") else (".0%" if k.startswith("flip_") else "+.3f")
        nums[f"{k}_text"] = fmt(nums[k], ".3f" if k.startswith("abs") else spec)
    nums["alpha_sup_text"] = fmt(a_sup, "g", "none")
    nums["alpha_enh_text"] = fmt(a_enh, "g", "none")
    nums["notes"] = notes
    for lm in lms:
        for claim_id, a, measure in (("synapse_act_suppress", a_sup, "abs_d_act"),
                                     ("synapse_prob_suppress", a_sup, "abs_d_prob"),
                                     ("synapse_act_enhance", a_enh, "abs_d_act"),
                                     ("synapse_prob_enhance", a_enh, "abs_d_prob")):
            m = None if a is None else paired_claim(syn, lm.name, a, measure, "control", n_boot=n_boot, seed=seed)
            if m is None:
                claims.append(measurement(claim_id, lm.name, why_not="no such α in alphas" if a is None else "no paired facts"))
                continue
            claims.append(measurement(claim_id, lm.name, m["estimate"], m["low"], m["high"], m["n"], p=m["p"], unit=m["unit"],
                     detail=f"α = {a:g}: mean |{measure[4:]}| synapses {m['mean_a']:.3f} vs control "
                            f"{m['mean_b']:.3f}; {m['detail']}"))
        m = None if a_sup is None else paired_claim(syn, lm.name, a_sup, "abs_d_act", MATCHED, n_boot=n_boot,
                                                    seed=seed)
        if m is None:
            claims.append(measurement("synapse_act_suppress_mass_matched", lm.name,
                     why_not="no suppressing α" if a_sup is None else
                     "the mass-matched control was not run (mass_matched = False)" if not mass_matched else
                     "no paired facts"))
        else:
            mass = syn[(syn.model == lm.name) & (syn.alpha == a_sup)].groupby("set").mass.mean()
            claims.append(measurement("synapse_act_suppress_mass_matched", lm.name, m["estimate"], m["low"], m["high"], m["n"],
                     p=m["p"], unit=m["unit"],
                     detail=f"α = {a_sup:g}: mean |d_act| synapses {m['mean_a']:.3f} vs matched {m['mean_b']:.3f}; "
                            f"attention mass scaled {mass.get('synapse', np.nan):.3f} vs "
                            f"{mass.get(MATCHED, np.nan):.3f}; {m['detail']}"))
    for s_, short in (("control", "ctrl"), (MATCHED, "matched")):
        m = part0[(part0["set"] == s_) & (part0.alpha == (a_sup if a_sup is not None else part0.alpha.min()))].mass
        nums[f"mass_{short}"] = finite_or_none(m.mean()) if len(m) else None
    m = part0[(part0["set"] == "synapse") & (part0.alpha == part0.alpha.min())].mass
    nums["mass_syn"] = finite_or_none(m.mean()) if len(m) else None
    for k in ("mass_syn", "mass_ctrl", "mass_matched"):
        nums[k + "_text"] = fmt(nums[k], ".3f", "not run")
    key = (lm0, a_sup, "abs_d_act")
    skey = (lm0, a_sup, MATCHED, "abs_d_act")
    nums["absact_matched_sup"] = finite_or_none(Sm.loc[skey, "mean"]) if skey in Sm.index else None
    nums["p_act_matched_sup"] = finite_or_none(Tm.loc[key, "p"]) if key in Tm.index else None
    nums["absact_matched_sup_text"] = fmt(nums["absact_matched_sup"], ".3f", "not run")
    nums["p_act_matched_sup_text"] = fmt(nums["p_act_matched_sup"], ".1e", "undefined")
    return nums, claims


def mean_ci_cluster_by_group(syn: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """ΔAct per (model, α, set, K_C / K_I group), CI over facts."""
    return mean_ci_cluster_table(syn, ["model", "alpha", "set", "group"], "d_act", cluster=["fact_id"],
                                 n_boot=n_boot, seed=seed)


# What the notebook calls besides this module's own functions (it imports this module and Chapter only).
from kqlib.book.report import records  # noqa: E402,F401
