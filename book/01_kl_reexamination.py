# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Is knowledge localized?
#
# **The claim** (paper §3.1–3.3, Table 1, Table 2, Figure 1). The *knowledge localization* (KL)
# assumption behind knowledge neurons says that a fact ⟨s, r, o⟩ lives in a few MLP neurons, whichever way
# it is asked. The paper tests it on ParaRel: every fact comes with several paraphrased *neighbor queries*
# ("The capital of France is", "France's capital city is", ...). If KL held, the knowledge neurons of all
# neighbor queries would be (nearly) the same set. The paper finds that for most facts they are not: it
# calls those facts *inconsistent knowledge* $K_I$ (the rest, which obey KL, *consistent knowledge* $K_C$),
# reports that e.g. 77 % of LLaMA3-8b's facts are inconsistent under all three localization methods, and
# backs this with editing: editing a fact through the knowledge neurons of one query carries over to its
# neighbor queries for $K_C$ facts much better than for $K_I$ facts.
#
# This chapter repeats the measurement on the models of the current profile.
#
# :::{note}
# Naming: the ICLR version of the paper calls consistent knowledge $K_I$ and inconsistent knowledge
# $K_{II}$; the arXiv v2 uses $K_C$ / $K_I$. This book writes **$K_C$ = consistent, $K_I$ = inconsistent**.
# :::

# %% tags=["parameters"]
models = ["smollm2-135m"]
# relations: [] = every ParaRel relation with at least 2 usable patterns
relations = []
# facts the model answers per relation; 0 = all
n_facts_per_relation = 20
steps = 20  # Riemann steps of the attribution path
methods = ["ig", "sig", "amig"]
t_threshold = 0.2  # per-query KN threshold: score > t * max score
cs_kind = "cs2"  # consistency score used to classify facts: "cs1" | "cs2" | "pairwise"
static_threshold = 0.3  # static θ: K_I iff CS < θ
# neuron site: "post" = the MLP intermediate activation, the input of the down projection
site = "post"
n_boot = 2000  # bootstrap resamples for the confidence intervals
edit_method = "ig"  # the localization method whose KNs are edited in Table 2
# facts edited per model; 0 = all
n_edit_facts = 0
# queries of a fact usable in Table 2: "correct" (answered top-1 before the edit) | "all"
edit_queries = "correct"
n_unrelated = 10  # unrelated queries per edit (locality)
n_ppl_texts = 12  # held-out sentences for the perplexity change
seed = 0
profile = "smoke"

# %%
import time

started = time.time()

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

import kqlib
from kqlib import consistency as C
from kqlib import editing, figures, kl_editing, report
from kqlib.localization import localize, query_scores
from kqlib.pararel import build_dataset

report.quiet()
sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.max_colwidth", 80)

assert edit_method in methods, f"edit_method {edit_method!r} must be one of methods {methods}"

# %% [markdown]
# ## Definitions
#
# **Attribution.** For a query $q$ with answer token $o$, let $\bar w^{(l)}$ be the vector of layer $l$'s
# MLP neurons at the last prompt position and $P_q(x)$ the probability of $o$ when that vector is replaced by
# $x$. Integrated gradients (Dai et al. 2022) scores neuron $i$ of layer $l$ by
#
# $$\mathrm{Attr}(w^{(l)}_i) = \bar w^{(l)}_i \int_0^1 \frac{\partial P_q(\alpha\,\bar w^{(l)})}{\partial w^{(l)}_i}\,d\alpha
#   \approx \frac{\bar w^{(l)}_i}{m} \sum_{k=1}^{m} \frac{\partial P_q(\alpha_k \bar w^{(l)})}{\partial w^{(l)}_i},$$
#
# with $m$ path points $\alpha_k$ (here `steps` of them, from 0 to 1). AMIG (Chen et al. 2024) starts the
# path at a mean-activation baseline $b^{(l)}$ instead of 0, $(\bar w - b)\odot\int_0^1 \nabla P_q(b +
# \alpha(\bar w - b))\,d\alpha$; SIG (Enguehard et al. 2023, adapted to neurons in `kqlib.attribution`)
# interpolates one layer while all other layers keep their actual activations.
#
# **Knowledge neurons of a query.** $\mathcal N_q = \{(l, i) : \mathrm{Attr}_q(l, i) > t \cdot
# \max \mathrm{Attr}_q\}$ with $t$ = `t_threshold`.
#
# **Consistency of a fact** with neighbor queries $q_1, \dots, q_k$, $\mathcal U = \bigcup_i \mathcal N_{q_i}$
# and $c(n) = \#\{i : n \in \mathcal N_{q_i}\}$:
#
# $$\mathrm{CS}_1 = \frac{|\bigcap_{i} \mathcal N_{q_i}|}{|\mathcal U|}, \qquad
#   \mathrm{CS}_2 = \frac{1}{|\mathcal U|}\sum_{n \in \mathcal U} \frac{c(n)}{k}.$$
#
# The paper's exact formulas were not available (see the spec); these are the best readings, and
# `kqlib.consistency` also offers the mean pairwise Jaccard index. Note that $\mathrm{CS}_2 \ge 1/k$
# whenever some query has a knowledge neuron: a fact with only two or three queries can never fall below
# $\theta = 0.3$ under $\mathrm{CS}_2$, whatever its neurons.
#
# **Classification.** A fact is inconsistent ($K_I$) iff $\mathrm{CS} < \theta$. The static threshold is
# $\theta = 0.3$ (the paper's "example" value); the dynamic one is Otsu's threshold of the CS histogram of
# one model × method, the $\theta$ maximising the between-class variance
# $\sigma_B^2(\theta) = \omega_0\omega_1(\mu_0 - \mu_1)^2$. The "∩" column counts facts that are
# inconsistent under *all* methods at once.

# %% [markdown]
# ## Data and knowledge neurons
#
# For each model: ParaRel facts it answers (the answer's first token is its top-1 next token on at least one
# query), with all their usable paraphrases as neighbor queries; then every query attributed with every
# method. Attributions are cached on disk, so the next chapters reuse them for free.

# %%
lms = [kqlib.load(name) for name in models]
report.model_table(lms)

# %%
datasets, locs = {}, {}
for lm in lms:
    t0 = time.time()
    ds = build_dataset(lm, relations or None, n_facts_per_relation or None, seed=seed, progress=False)
    datasets[lm.name] = ds
    locs[lm.name] = localize(lm, ds.queries, methods, steps=steps, site=site, t=t_threshold, progress=False)
    print(f"{lm.name}: {len(ds)} facts, {len(ds.queries)} queries, {len(ds.relations())} relations; "
          f"{len(methods)} methods attributed in {time.time() - t0:.0f} s")

neurons = pd.concat([locs[m].neurons for m in locs], ignore_index=True)
queries = pd.concat([locs[m].queries for m in locs], ignore_index=True)
facts = pd.concat([d.to_frame().assign(model=m) for m, d in datasets.items()], ignore_index=True)
facts_per_model = facts.drop_duplicates(["model", "fact_id"])
kqlib.data_export.write_table("01_kl_reexamination", "queries", facts, description="every query of every fact, with the model's p(answer) and rank")
kqlib.data_export.write_table("01_kl_reexamination", "kn_sets", neurons, description="knowledge neurons of every (model, method, query)")
(queries.groupby(["model", "method"])
 .agg(queries=("prompt", "size"), mean_KNs=("n_neurons", "mean"), empty_sets=("n_neurons", lambda s: int((s == 0).sum())))
 .round(2))

# %% [markdown]
# ## Consistency of every fact
#
# One row per (model, method, fact): the size of the union and of the intersection of its queries' KN sets,
# and the three consistency scores.

# %%
cs = C.consistency_table(neurons, queries=queries)
cs = cs.merge(facts_per_model[["model", "fact_id", "subject", "obj"]], on=["model", "fact_id"], how="left")
cs = cs.dropna(subset=[cs_kind]).reset_index(drop=True)
kqlib.data_export.write_table("01_kl_reexamination", "consistency", cs, figure="01_fig1_heatmaps", description="one row per (model, method, fact): KN-set sizes and consistency scores")
cs.groupby(["model", "method"])[["n_queries", "mean_set_size", "union_size", "intersection_size", "cs1", "cs2",
                                 "pairwise"]].mean().round(3)

# %% [markdown]
# ## Table 1: how many facts are inconsistent?
#
# Share of $K_I$ facts per model and method, at the static $\theta$ and at Otsu's $\theta$, with 95 %
# percentile-bootstrap confidence intervals over facts, and the ∩ column.

# %%
shares = C.ki_share_table(cs, kind=cs_kind, static=static_threshold, otsu=True, n_boot=n_boot, seed=seed)
method_order = list(methods) + [C.INTERSECTION_METHOD]
shares["method"] = pd.Categorical(shares["method"], method_order, ordered=True)
shares = shares.sort_values(["model", "threshold_kind", "method"]).reset_index(drop=True)
kqlib.data_export.write_table("01_kl_reexamination", "ki_shares", shares, description="Table 1: share of K_I facts per model, method and threshold")


def share_cell(r):
    if not np.isfinite(r.share_ki):
        return "–"
    return f"{r.share_ki:.0%} [{r.ci_low:.0%}, {r.ci_high:.0%}] (n={r.n_facts})"


table1 = (shares.assign(cell=shares.apply(share_cell, axis=1))
          .pivot_table(index=["model", "threshold_kind"], columns="method", values="cell", aggfunc="first",
                       observed=True))
table1.columns.name = "K_I share by method"
table1

# %%
thresholds = (shares[shares.method != C.INTERSECTION_METHOD]
              .pivot_table(index=["model", "method"], columns="threshold_kind", values="threshold", observed=True))
thresholds.columns = [f"θ ({c})" for c in thresholds.columns]
thresholds.round(3)

# %% [markdown]
# **Welch's t-test** between the CS of the $K_C$ and the $K_I$ group. The groups are *defined* by a
# threshold on that same CS, so a tiny p-value is guaranteed with enough facts: it is a sanity check,
# not evidence for the claim. p is undefined (shown empty, with the reason) when a group has fewer than
# two facts.

# %%
welch = shares[shares.method != C.INTERSECTION_METHOD][
    ["model", "method", "threshold_kind", "threshold", "n_facts", "n_ki", "mean_cs_kc", "mean_cs_ki", "welch_t",
     "welch_p", "note"]].reset_index(drop=True)
welch.style.format({"threshold": "{:.3f}", "mean_cs_kc": "{:.3f}", "mean_cs_ki": "{:.3f}", "welch_t": "{:.2f}",
                    "welch_p": "{:.2e}"}, na_rep="").hide(axis="index")

# %% [markdown]
# **Per relation.** The share of $K_I$ facts of each relation, at both thresholds (Otsu's $\theta$ is the one
# of the whole model × method).

# %%
theta = shares.set_index(["model", "method", "threshold_kind"])["threshold"]
rows = []
for (model, method, rel), g in cs.groupby(["model", "method", "relation"]):
    row = dict(model=model, method=method, relation=rel, facts=len(g), queries_per_fact=g.n_queries.mean(),
               mean_cs=g[cs_kind].mean())
    for tk in ("static", "otsu"):
        row[f"K_I ({tk})"] = C.share_inconsistent(g[cs_kind], theta[(model, method, tk)])
    rows.append(row)
per_relation = pd.DataFrame(rows)
kqlib.data_export.write_table("01_kl_reexamination", "per_relation", per_relation, description="K_I share per relation")
per_relation.style.format({"queries_per_fact": "{:.1f}", "mean_cs": "{:.3f}", "K_I (static)": "{:.0%}",
                           "K_I (otsu)": "{:.0%}"}).hide(axis="index")

# %% [markdown]
# ## Figure 1: a consistent and an inconsistent fact
#
# The paper's Figure 1 shows neuron activations for two neighbor queries of a consistent fact and of an
# inconsistent one. Here the two facts are *chosen by the data*: the fact with the highest and the one with
# the lowest consistency score (first model, method `edit_method`, ties broken by fact id). Each panel shows,
# for every layer, the same neurons (the layer's top neurons over both queries) coloured by the query's
# attribution score divided by its maximum.

# %%
lm0 = lms[0]
pool = cs[(cs.model == lm0.name) & (cs.method == edit_method)].sort_values([cs_kind, "fact_id"])
fig1_facts = {"most consistent": pool.iloc[-1], "least consistent": pool.iloc[0]} if len(pool) else {}
q_by_fact = {(m, e.fact.fact_id): e for m, d in datasets.items() for e in d.facts}

fig, axes = plt.subplots(1, 4, figsize=(15, 4.6), sharey=True)
fig1_info = {}
for col, (label, row) in enumerate(fig1_facts.items()):
    entry = q_by_fact[(lm0.name, row.fact_id)]
    two = sorted(entry.queries, key=lambda q: q.pattern_index)[:2]
    sc = query_scores(lm0, two, method=edit_method, steps=steps, site=site)
    kqlib.data_export.write_table("01_kl_reexamination", f"fig1_{label.replace(' ', '_')}", kqlib.data_export.score_frame(sc.numpy(), [q.prompt for q in two]).assign(fact_id=row.fact_id, model=lm0.name, method=edit_method), figure="01_fig1_heatmaps", description="the cells of one Figure 1 panel pair (shared top-12 neurons per layer)")
    image = figures.query_heatmaps(axes[2 * col: 2 * col + 2], sc.numpy(),
                                   [f"{label} ({cs_kind} = {row[cs_kind]:.2f})\n“{q.prompt} …”" for q in two])
    fig1_info[label] = dict(subject=entry.fact.subject, relation=entry.fact.relation, obj=entry.fact.obj,
                            cs=float(row[cs_kind]), prompts=[q.prompt for q in two])
if fig1_facts:
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="attribution / max")
fig.suptitle(f"{lm0.name}, {edit_method}: two neighbor queries of the most and the least consistent fact", y=1.04)
fig1_path = figures.save(fig, "01_fig1_heatmaps")
plt.show()

# %%
pd.DataFrame(fig1_info).T

# %% [markdown]
# ## Table 2: editing through the knowledge neurons of one query
#
# For every fact, take the knowledge neurons $\mathcal N_{q_e}$ (method `edit_method`) of **one** query
# $q_e$, its first usable query (`edit_queries = "correct"`: only the queries the model answers top-1 are
# usable, so that a change is caused by the edit), and
#
# * **erase** the fact: zero the value vectors of $\mathcal N_{q_e}$ (their columns of the MLP output
#   projection), $v_{l,i} \leftarrow 0$;
# * **update** it to another object $o'$ of the same relation (seeded draw), Dai et al.'s rule
#
# $$v_{l,i} \leftarrow v_{l,i} - \lambda_1\frac{\lVert v_{l,i}\rVert}{\lVert e(o)\rVert}\, e(o)
#   + \lambda_2\frac{\lVert v_{l,i}\rVert}{\lVert e(o')\rVert}\, e(o'), \qquad \lambda_1 = 1,\ \lambda_2 = 8,$$
#
#   with $e(\cdot)$ the input embedding of the answer's first token.
#
# Then **Rel** = success on $q_e$ (erase: the top-1 token is no longer $o$; update: it is $o'$),
# **Gen** = the same on the fact's other usable (neighbor) queries, **Loc** = share of unrelated queries
# (first queries of `n_unrelated` other facts) whose top-1 prediction is unchanged,
# **Avg** = (Rel + Gen + Loc)/3 and **ΔPPL** = perplexity change on held-out sentences. Weights are restored
# bit-exactly after each edit. If KL held for every fact, Gen would not depend on the class; the paper
# reports that it is much lower for $K_I$ facts. The loop is `kqlib.kl_editing.run_single_query_edits`
# (the $\mathcal N_i$ selection of chapter 5 with one edited query and every other query held out); a fact
# with fewer than two usable queries, or whose edited query has no knowledge neuron, is not edited.

# %%
edit_frames = []
for lm in lms:
    mine = cs[(cs.model == lm.name) & (cs.method == edit_method)]
    t0 = time.time()
    df = kl_editing.run_single_query_edits(
        lm, datasets[lm.name], locs[lm.name].sets(edit_method, model=lm.name), query_filter=edit_queries,
        n_unrelated=n_unrelated, fact_ids=list(mine.fact_id), n_facts=n_edit_facts or None, seed=seed,
        ppl_texts=editing.DEFAULT_PPL_TEXTS[:n_ppl_texts])
    edit_frames.append(df.merge(mine[["model", "fact_id", cs_kind]].rename(columns={cs_kind: "cs"}),
                                on=["model", "fact_id"], how="left"))
    print(f"{lm.name}: {df.fact_id.nunique()} of {len(mine)} facts edited ({len(df)} edits) in "
          f"{time.time() - t0:.0f} s")
edits = pd.concat(edit_frames, ignore_index=True)
kqlib.data_export.write_table("01_kl_reexamination", "edits", edits, figure="01_table2_edits", description="Table 2: one row per one-query edit (fact, task)")
edits[["model", "relation", "subject", "obj", "new_obj", "task", "cs", "n_neurons", "n_neighbors", "rel", "gen",
       "loc", "dppl"]].style.format({"cs": "{:.3f}", "rel": "{:.2f}", "gen": "{:.2f}", "loc": "{:.2f}",
                                     "dppl": "{:+.3g}"}).hide(axis="index")

# %% [markdown]
# With `edit_queries = "correct"` every measured query is answered correctly before the edit (the
# `rel_before` / `gen_before` columns of `edits` are 0 for erasure), so an erasure success is a change made by
# the edit. Read ΔPPL next to Rel/Gen: Dai et al.'s $\lambda_2 = 8$ was chosen for BERT, and when ΔPPL
# explodes (and Loc drops) the update has damaged the model as a whole rather than rewritten one fact, so its
# Gen says nothing about localization.
#
# The class of each edited fact is its class under `edit_method`, at the static and at Otsu's threshold
# (the same edits, grouped two ways). Each cell: mean over the class's facts with a 95 % bootstrap interval.

# %%
def classes_at(tk):
    return kl_editing.classes_from_cs(cs, {m: theta[(m, edit_method, tk)] for m in models}, kind=cs_kind,
                                      method=edit_method)


table2 = pd.concat([kl_editing.table2(edits, classes_at(tk), n_boot=n_boot, seed=seed).assign(threshold_kind=tk)
                    for tk in ("static", "otsu")], ignore_index=True)
table2 = table2[table2.group != "all"].rename(columns={"group": "cls"}).reset_index(drop=True)
kqlib.data_export.write_table("01_kl_reexamination", "table2", table2, figure="01_table2_edits", description="Table 2: Rel/Gen/Loc/Avg/ΔPPL per class with bootstrap CIs")


def ci_cell(r, m, spec=".2f"):
    if not np.isfinite(r[m]):
        return "–"
    if np.isfinite(r[f"{m}_low"]) and r[f"{m}_high"] > r[f"{m}_low"]:
        return f"{r[m]:{spec}} [{r[f'{m}_low']:{spec}}, {r[f'{m}_high']:{spec}}]"
    return f"{r[m]:{spec}}"


table2_view = table2[["model", "threshold_kind", "task", "cls", "facts"]].copy()
for m, label, spec in (("rel", "Rel", ".2f"), ("gen", "Gen", ".2f"), ("loc", "Loc", ".2f"), ("avg", "Avg", ".2f"),
                       ("dppl", "ΔPPL", "+.3g")):
    table2_view[label] = [ci_cell(r, m, spec) for _, r in table2.iterrows()]
table2_view.rename(columns={"cls": "class"}).style.hide(axis="index")

# %%
static_cls = classes_at("static")
long = (edits.assign(cls=[static_cls.get((m, f)) for m, f in zip(edits.model, edits.fact_id)])
        .melt(id_vars=["model", "fact_id", "task", "cls"], value_vars=["rel", "gen", "loc"], var_name="metric"))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, task in zip(axes, ("erase", "update")):
    part = long[long.task == task].dropna(subset=["value"])
    if len(part):
        sns.barplot(data=part, x="metric", y="value", hue="cls", hue_order=["K_C", "K_I"], order=["rel", "gen", "loc"],
                    ax=ax, errorbar=("ci", 95), seed=seed, legend=ax is axes[0])
    ax.set_title(f"{task} ({part.fact_id.nunique()} facts)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.set_ylabel("mean over facts (95 % CI)")
fig.suptitle(f"One-query edits by class (static θ = {static_threshold:g}, {edit_method} KNs)")
fig.tight_layout()
if axes[0].get_legend() is not None:
    sns.move_legend(axes[0], "upper left", bbox_to_anchor=(2.05, 1.0), title="class", frameon=False)
table2_path = figures.save(fig, "01_table2_edits")
plt.show()

# %% [markdown]
# ## Headline numbers

# %%
finite_or_none = report.finite_or_none


def gen_gap(task, tk="static"):
    """Gen(K_C) − Gen(K_I) averaged over models, None when a class is empty."""
    gaps = []
    for model in models:
        part = table2[(table2.model == model) & (table2.task == task) & (table2.threshold_kind == tk)]
        g = part.set_index("cls")["gen"] if len(part) else pd.Series(dtype=float)
        if {"K_C", "K_I"} <= set(g.dropna().index):
            gaps.append(g["K_C"] - g["K_I"])
    return float(np.mean(gaps)) if gaps else None


def class_facts(tk="static"):
    """Edited facts per class (erase rows), summed over models."""
    part = table2[(table2.task == "erase") & (table2.threshold_kind == tk)]
    return {c: int(part[part.cls == c].facts.sum()) for c in ("K_C", "K_I")}


def fmt(x, spec=".2f", missing="not measurable"):
    return missing if x is None else format(x, spec)


inter = shares[shares.method == C.INTERSECTION_METHOD].set_index(["model", "threshold_kind"])
per_method = shares[shares.method != C.INTERSECTION_METHOD]
static_pm = per_method[per_method.threshold_kind == "static"]
ps = per_method["welch_p"].to_numpy(float)
n_p_defined = int(np.isfinite(ps).sum())
model_size = {lm.name: sum(p.numel() for p in lm.model.parameters()) for lm in lms}
small, large = min(model_size, key=model_size.get), max(model_size, key=model_size.get)

numbers = {
    "n_models": len(lms),
    "n_facts": int(facts_per_model.shape[0]),
    "n_queries": int(facts.shape[0]),
    "n_relations": int(facts.relation.nunique()),
    "queries_per_fact": float(facts.groupby(["model", "fact_id"]).size().mean()),
    "model0": lm0.name,
    "ki_static_all_model0": finite_or_none(inter.loc[(lm0.name, "static"), "share_ki"]),
    "ki_otsu_all_model0": finite_or_none(inter.loc[(lm0.name, "otsu"), "share_ki"]),
    "ki_static_min_method": float(static_pm.share_ki.min()),
    "ki_static_max_method": float(static_pm.share_ki.max()),
    "share_below_static": float((cs[cs_kind] < static_threshold).mean()),
    "mean_cs": float(cs[cs_kind].mean()),
    "n_welch_p_defined": n_p_defined,
    "n_welch_tests": int(len(ps)),
    "welch_p_max": float(np.nanmax(ps)) if n_p_defined else None,
    "n_edits": int(len(edits)),
    "n_edited_facts": int(edits.drop_duplicates(["model", "fact_id"]).shape[0]),
    "gen_gap_erase": gen_gap("erase"),
    "gen_gap_update": gen_gap("update"),
    "edited_kc_facts": class_facts()["K_C"],
    "edited_ki_facts": class_facts()["K_I"],
}
numbers["gen_gap_erase_text"] = fmt(numbers["gen_gap_erase"], "+.2f")
numbers["gen_gap_update_text"] = fmt(numbers["gen_gap_update"], "+.2f")
numbers["welch_p_max_text"] = fmt(numbers["welch_p_max"], ".1e", "undefined (a group has fewer than 2 facts)")
numbers["ki_static_all_model0_text"] = fmt(numbers["ki_static_all_model0"], ".0%")
numbers["ki_otsu_all_model0_text"] = fmt(numbers["ki_otsu_all_model0"], ".0%")
numbers["ki_static_min_method_text"] = f"{numbers['ki_static_min_method']:.0%}"
numbers["ki_static_max_method_text"] = f"{numbers['ki_static_max_method']:.0%}"
numbers["share_below_static_text"] = f"{numbers['share_below_static']:.0%}"

glued = {k: v for k, v in numbers.items() if v is None or isinstance(v, (int, float, str))}
report.glue_numbers(glued)

# %% [markdown]
# With the current profile, {glue:text}`n_facts` facts ({glue:text}`n_queries` queries,
# {glue:text}`queries_per_fact:.1f` per fact on average, {glue:text}`n_relations` relations) of
# {glue:text}`n_models` model(s) were localized. For {glue:text}`model0`, the share of facts that are
# inconsistent under **all** methods is {glue:text}`ki_static_all_model0_text` at the static threshold and
# {glue:text}`ki_otsu_all_model0_text` at Otsu's threshold; per method the static share ranges from
# {glue:text}`ki_static_min_method_text` to {glue:text}`ki_static_max_method_text`. Over all models, methods
# and facts, {glue:text}`share_below_static_text` of the consistency scores lie below the static threshold
# (mean score {glue:text}`mean_cs:.2f`). Welch's test is defined for {glue:text}`n_welch_p_defined` of
# {glue:text}`n_welch_tests` model × method × threshold groups, with a largest p-value of
# {glue:text}`welch_p_max_text`. Editing through the neurons of one query ({glue:text}`n_edits` edits of
# {glue:text}`n_edited_facts` facts: {glue:text}`edited_kc_facts` $K_C$ and {glue:text}`edited_ki_facts`
# $K_I$ at the static threshold), the generalization gap Gen($K_C$) − Gen($K_I$) is
# {glue:text}`gen_gap_erase_text` for erasure and {glue:text}`gen_gap_update_text` for update.

# %% [markdown]
# ## Paper vs this run
#
# Items 1–5 of the paper's headline results. Verdicts: **holds**, **differs**, or **not measurable here**
# (with the reason); the numbers of this run come from the much smaller models of the current profile.

# %%
def verdict(ok, why_not=""):
    if ok is None:
        return f"not measurable here{': ' + why_not if why_not else ''}"
    return "holds" if ok else "differs"


inter_static = {m: inter.loc[(m, "static"), "share_ki"] for m in models}
majority = [v for v in inter_static.values() if np.isfinite(v)]
order_ok = None
if len(models) >= 2 and all(np.isfinite(inter_static[m]) for m in (small, large)):
    order_ok = bool(inter_static[small] < inter_static[large])
rows = [
    dict(claim="1. Inconsistent knowledge is the majority (∩ of all methods, static θ)",
         paper="77 % K_I for LLaMA3-8b (∩, static); majority under every method",
         **{"this run": "; ".join(f"{m}: {v:.0%}" for m, v in inter_static.items() if np.isfinite(v))
            + f" (per method {numbers['ki_static_min_method']:.0%}–{numbers['ki_static_max_method']:.0%})"},
         verdict=verdict(bool(np.mean(majority) > 0.5) if majority else None, "no facts")
         + " (different, much smaller models)"),
    dict(claim="2. The smaller model has the lower K_I share",
         paper="GPT-2 lower than LLaMA2-7b and LLaMA3-8b",
         **{"this run": ", ".join(f"{m}: {inter_static[m]:.0%}" for m in models if np.isfinite(inter_static[m]))},
         verdict=verdict(order_ok, "needs two models (profile cpu or paper)")),
    dict(claim="3. Welch's t-test separates K_C and K_I CS",
         paper="p < 1e-6 (tautological: the groups are cut from the same CS)",
         **{"this run": f"largest p = {numbers['welch_p_max_text']} over {n_p_defined}/{len(ps)} defined tests"},
         verdict=verdict(bool(numbers["welch_p_max"] < 1e-6) if n_p_defined else None,
                         "a group has < 2 facts") + ("" if n_p_defined and numbers["welch_p_max"] < 1e-6
                                                     else " (p depends on the number of facts)")),
    dict(claim="4. Most facts have CS below 0.3",
         paper="most of the violin mass below 0.3",
         **{"this run": f"{numbers['share_below_static']:.0%} of (fact, method) CS < {static_threshold:g}"},
         verdict=verdict(bool(numbers["share_below_static"] > 0.5))),
    dict(claim="5. One-query edits generalize worse for K_I than for K_C",
         paper="Gen(K_C) ≫ Gen(K_I) (Table 2; numbers not retrieved)",
         **{"this run": f"Gen(K_C) − Gen(K_I): erase {numbers['gen_gap_erase_text']}, update "
                        f"{numbers['gen_gap_update_text']} ({numbers['edited_kc_facts']} K_C / "
                        f"{numbers['edited_ki_facts']} K_I edited facts, static θ)"},
         verdict=verdict(None if numbers["gen_gap_erase"] is None or min(numbers["edited_kc_facts"],
                                                                        numbers["edited_ki_facts"]) < 2
                         else bool(numbers["gen_gap_erase"] > 0),
                         "each class needs at least 2 edited facts")),
]
report.paper_vs_run_table(rows)

# %% [markdown]
# ## Summary
#
# * The knowledge neurons of a fact's paraphrases are compared with two consistency scores; facts are
#   split into $K_C$ / $K_I$ with a static and an Otsu threshold, per model and localization method.
# * The ∩ column, the Welch tests and the per-relation table above give the numbers behind the paper's
#   Table 1; the two heatmaps are the data-chosen analogue of Figure 1; the edits give Table 2.
# * Caveats: the models of the `cpu` and `smoke` profiles are far smaller than the paper's; $\mathrm{CS}_2$
#   has a floor of $1/k$, so relations with few paraphrases cannot produce $K_I$ facts at $\theta = 0.3$;
#   the Welch test is a sanity check, not evidence.
#
# ## Exercises
#
# 1. Rerun with `-p cs_kind=cs1` and `-p cs_kind=pairwise`. Which facts change class? Why is $\mathrm{CS}_1$
#    always the smallest of the three?
# 2. Restrict the data to relations with many paraphrases (`-p "relations=['P138','P495']"`): does the
#    $K_I$ share rise, as the $1/k$ floor of $\mathrm{CS}_2$ suggests?
# 3. Table 2 edits the neurons of one query. Edit the union of all queries' neurons instead (the $\mathcal
#    N_g$ baseline of chapter CAS): how do Gen and Loc move for $K_I$ facts?
# 4. Chapter 2 varies $t$ and $\theta$; before reading it, predict in which direction each moves the $K_I$
#    share.

# %%
records = report.records


results = dict(numbers)
results["ki_shares"] = records(shares.assign(method=shares.method.astype(str)))
results["per_relation"] = records(per_relation)
results["table2"] = records(table2)
results["edits"] = records(edits)
results["fig1_facts"] = fig1_info
results["figures"] = {"fig1": str(fig1_path.name), "table2": str(table2_path.name)}
run = report.run_record(lms, parameters={
    "models": models, "relations": relations, "n_facts_per_relation": n_facts_per_relation, "steps": steps,
    "methods": methods, "t_threshold": t_threshold, "cs_kind": cs_kind, "static_threshold": static_threshold,
    "site": site, "n_boot": n_boot, "edit_method": edit_method, "n_edit_facts": n_edit_facts,
    "edit_queries": edit_queries, "n_unrelated": n_unrelated, "n_ppl_texts": n_ppl_texts, "seed": seed,
    "profile": profile}, started=started)
path = report.write_results("01_kl_reexamination", results, run)
print(f"results written to {path.name}; wall time {run['wall_time_s']:.1f} s")
