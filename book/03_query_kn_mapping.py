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
# # The localization belongs to the query
#
# **The claim** (paper §4.1, Figure 4; the first half of the *Query Localization* assumption). If a fact
# lived in a fixed set of knowledge neurons (KL), then the knowledge neurons found for one paraphrase of
# the fact would work for every other paraphrase: switching off the neurons of a *neighbor* query should hurt
# the answer of query $q$ about as much as switching off $q$'s own. The paper finds that this is not so
# for inconsistent facts ($K_I$): suppressing or enhancing $q$'s **own** knowledge neurons moves the answer
# probability a lot, while the knowledge neurons of its neighbor queries, and above all their
# **intersection**, move it much less. For consistent facts ($K_C$) the gap is smaller. Hence
# *Query-KN mapping*: "the localization results are associated with the query rather than the fact".
#
# This chapter repeats the intervention on the facts of chapter 1, classified exactly as there.

# %% tags=["parameters"]
models = ["smollm2-135m"]
# relations: [] = every ParaRel relation with at least 2 usable patterns
relations = []
# facts the model answers per relation; 0 = all
n_facts_per_relation = 20
steps = 20  # Riemann steps of the attribution path (as in chapter 1: the attributions come from the cache)
methods = ["ig", "sig", "amig"]
t_threshold = 0.2  # per-query KN threshold: score > t * max score
cs_kind = "cs2"  # consistency score that classifies facts (as in chapter 1)
static_threshold = 0.3  # static θ: K_I iff CS < θ
threshold_kind = "static"  # which θ splits K_C / K_I here: "static" or "otsu"
site = "post"  # neuron site, as in chapter 1
enhance_factor = 2.0  # enhance: multiply the activations by this factor (suppress: set them to 0)
# queries per (model, method, class); 0 = all (a seeded sample otherwise)
max_queries = 0
n_boot = 2000  # bootstrap resamples for the confidence intervals
seed = 0
profile = "smoke"

# %%
import random
import time

started = time.time()

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

import kqlib
from kqlib import consistency as C
from kqlib import figures, report, stats
from kqlib.localization import localize
from kqlib.mapping import mapping_queries, run_mapping
from kqlib.pararel import build_dataset

report.quiet()
sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.max_colwidth", 80)

assert threshold_kind in ("static", "otsu"), f"threshold_kind must be 'static' or 'otsu', got {threshold_kind!r}"
assert enhance_factor > 1, "enhance_factor must be > 1"

# %% [markdown]
# ## The intervention
#
# Let $\mathcal N_q$ be the knowledge neurons of query $q$ (its neurons with attribution above
# $t \cdot \max$, chapter 1), and $q_1, \dots, q_k$ the *other* queries of the same fact ($q$ excluded). For
# each query we intervene at its last position on one of four neuron sets:
#
# | condition | neurons |
# |---|---|
# | own | $\mathcal N_q$ |
# | union | $\bigcup_{j} \mathcal N_{q_j}$ |
# | intersection | $\bigcap_{j} \mathcal N_{q_j}$ |
# | random (control) | $\lvert\mathcal N_q\rvert$ random neurons, one in each layer of a neuron of $\mathcal N_q$, none in $\mathcal N_q$ |
#
# **Suppress** sets the activations $a_n$ of the set's neurons to $0$; **enhance** multiplies them by
# `enhance_factor` (2, as in Dai et al. 2022). The effect is the relative change of the answer's
# probability,
#
# $$\Delta\mathrm{Prob} = \frac{p_{\text{after}}(o \mid q) - p_{\text{before}}(o \mid q)}{p_{\text{before}}(o \mid q)},$$
#
# and whether the top-1 prediction flips (suppress: away from $o$; enhance: to $o$). The paper's third bar,
# **Avg**, is defined here as the mean absolute effect of the two operations,
#
# $$\mathrm{Avg} = \tfrac12\left(\lvert\Delta\mathrm{Prob}_{\text{suppress}}\rvert + \lvert\Delta\mathrm{Prob}_{\text{enhance}}\rvert\right),$$
#
# so that a larger Avg means the neuron set matters more to the query, whatever the direction.
#
# **Classes.** A fact is $K_I$ iff its consistency score $\mathrm{CS}$ (`cs_kind`) is below $\theta$
# (static `static_threshold`, or Otsu's threshold of the model × method's CS histogram), per localization
# method, exactly as in chapter 1 (same data, same attributions, same `kqlib.consistency` calls).
#
# If KL held, own, union and intersection would all contain "the fact's" neurons and give similar
# $\Delta\mathrm{Prob}$; under Query-KN mapping own ≫ intersection for $K_I$ facts.

# %% [markdown]
# ## Facts, knowledge neurons and classes
#
# The same calls as chapter 1: `build_dataset` → `localize` (read from the attribution cache when chapter 1
# ran with the same parameters) → `consistency_table` → `classify`.

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
    print(f"{lm.name}: {len(ds)} facts, {len(ds.queries)} queries; localized in {time.time() - t0:.0f} s")

neurons = pd.concat([locs[m].neurons for m in locs], ignore_index=True)
queries = pd.concat([locs[m].queries for m in locs], ignore_index=True)
cs = C.consistency_table(neurons, queries=queries)
cs = cs.dropna(subset=[cs_kind]).reset_index(drop=True)

thetas = {}
for (model, method), g in cs.groupby(["model", "method"]):
    values = g[cs_kind].to_numpy(float)
    thetas[(model, method)] = static_threshold if threshold_kind == "static" else C.otsu_threshold(values)
cs["theta"] = [thetas[(m, k)] for m, k in zip(cs.model, cs.method)]
cs["group"] = "K_C"
for (model, method), idx in cs.groupby(["model", "method"]).groups.items():
    ki = C.classify(cs.loc[idx, cs_kind], thetas[(model, method)])
    cs.loc[idx, "group"] = np.where(ki, "K_I", "K_C")
kqlib.data_export.write_table("03_query_kn_mapping", "consistency", cs, description="one row per (model, method, fact): consistency score, θ and class")
(cs.groupby(["model", "method", "group"])
 .agg(facts=("fact_id", "size"), mean_cs=(cs_kind, "mean"), theta=("theta", "first"),
      queries_per_fact=("n_queries", "mean"))
 .round(3))

# %% [markdown]
# ## Suppress and enhance
#
# For every query of a classified fact (at most `max_queries` per model × method × class, a seeded sample),
# `kqlib.mapping.run_mapping` runs 1 + 4 conditions × 2 operations forward passes and returns one row per
# (query, condition, operation).

# %%
def capped(qs, meta, cap, rng):
    if not cap or len(qs) <= cap:
        return qs, meta
    keep = sorted(rng.sample(range(len(qs)), cap))
    return [qs[i] for i in keep], [meta[i] for i in keep]


operations = {"suppress": 0.0, "enhance": float(enhance_factor)}
groups = cs.set_index(["model", "method", "fact_id"])["group"]
frames = []
for lm in lms:
    for method in methods:
        qs, meta = mapping_queries(locs[lm.name], method, model=lm.name)
        for m in meta:
            m["group"] = groups.get((lm.name, method, m["fact_id"]), None)
        for group in ("K_C", "K_I"):
            idx = [i for i, m in enumerate(meta) if m["group"] == group]
            gq, gm = capped([qs[i] for i in idx], [meta[i] for i in idx], max_queries,
                            random.Random(f"{seed}-{lm.name}-{method}-{group}"))
            t0 = time.time()
            if gq:
                frames.append(run_mapping(lm, gq, site=site, seed=seed, operations=operations, meta=gm))
            print(f"{lm.name} {method} {group}: {len(gq)} queries in {time.time() - t0:.1f} s")
mapping = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
    columns=["model", "method", "relation", "fact_id", "pattern_index", "group", "condition", "operation",
             "n_neurons", "p_before", "p_after", "d_prob", "flipped"])
kqlib.data_export.write_table("03_query_kn_mapping", "mapping", mapping, figure="03_fig4_query_kn_mapping", description="one row per (query, condition, operation): p(answer) before/after and ΔProb")
print(f"{len(mapping)} interventions")
mapping.head()

# %% [markdown]
# **How big are the sets?** The intersection of the neighbors' sets is often small or empty: an empty set
# is a no-op ($\Delta\mathrm{Prob} = 0$), which is itself the point of the experiment (the neighbors share
# nothing that $q$ could use).

# %%
UNIT = ["model", "method", "fact_id", "pattern_index"]
sizes = (mapping[mapping.operation == "suppress"]
         .groupby(["model", "method", "group", "condition"])
         .agg(queries=("n_neurons", "size"), mean_neurons=("n_neurons", "mean"),
              empty_share=("n_neurons", lambda s: float((s == 0).mean())))
         .round(2))
sizes

# %% [markdown]
# ## Figure 4: ΔProb per condition
#
# Mean $\Delta\mathrm{Prob}$ of suppression and enhancement and their Avg, per condition, for $K_C$ and
# $K_I$ facts; error bars are 95 % percentile-bootstrap CIs over queries.

# %%
OPS = ["suppress", "enhance", "average"]
CONDS = ["own", "union", "intersection", "random"]
long = stats.with_average(mapping, unit=UNIT + ["group", "condition"], column="operation", value="d_prob")
summary = stats.mean_ci_table(long, ["model", "method", "group", "condition", "operation"], "d_prob",
                              n_boot=n_boot, seed=seed)
flips = (mapping.groupby(["model", "method", "group", "condition", "operation"])["flipped"].mean()
         .rename("flip_rate").reset_index())
summary = summary.merge(flips, how="left", on=["model", "method", "group", "condition", "operation"])
kqlib.data_export.write_table("03_query_kn_mapping", "summary", summary, figure="03_fig4_query_kn_mapping", description="Figure 4: mean ΔProb with 95 % bootstrap CI and flip rate")


def ci_bars(ax, table, x_order, hue_order, palette):
    """Bars of table['mean'] with [ci_low, ci_high] error bars, x = condition, hue = operation."""
    width = 0.8 / len(hue_order)
    for j, hue in enumerate(hue_order):
        part = table[table.operation == hue].set_index("condition").reindex(x_order)
        xs = np.arange(len(x_order)) - 0.4 + width * (j + 0.5)
        ax.bar(xs, part["mean"], width, color=palette[j], label=hue)
        err = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]])
        ax.errorbar(xs, part["mean"], yerr=np.nan_to_num(err), fmt="none", ecolor="#333", capsize=3, lw=1)
    ax.set_xticks(range(len(x_order)), x_order)
    ax.axhline(0, color="black", lw=0.8)


method0 = methods[0]
palette = sns.color_palette("deep", 3)
fig, axes = plt.subplots(2, len(lms), figsize=(5.5 * len(lms), 7), squeeze=False, sharey=False)
for col, lm in enumerate(lms):
    for row, group in enumerate(("K_C", "K_I")):
        ax = axes[row, col]
        part = summary[(summary.model == lm.name) & (summary.method == method0) & (summary.group == group)]
        n_q = int(part["n"].max()) if len(part) else 0
        if len(part):
            ci_bars(ax, part, CONDS, OPS, palette)
        ax.set_title(f"{lm.name}, {method0}: {group} ({n_q} queries)")
        ax.set_ylabel("ΔProb (relative)")
axes[0, 0].legend(title="operation", fontsize=8)
fig.tight_layout()
fig4_path = figures.save(fig, "03_fig4_query_kn_mapping")
plt.show()

# %%
(summary.assign(cell=summary.apply(lambda r: "–" if not np.isfinite(r["mean"]) else
                                   f"{r['mean']:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]", axis=1))
 .pivot_table(index=["model", "method", "group", "condition"], columns="operation", values="cell",
              aggfunc="first")[OPS])

# %% [markdown]
# **Top-1 flips**: the share of queries whose prediction leaves the answer when a set is suppressed (only
# queries whose top-1 was the answer can flip) or becomes the answer when it is enhanced.

# %%
(summary[summary.operation != "average"]
 .pivot_table(index=["model", "method", "group", "condition"], columns="operation", values="flip_rate")
 .round(2))

# %% [markdown]
# ## Paired tests: own vs the neighbors' neurons
#
# Per query, Wilcoxon's signed-rank test (two-sided, `scipy.stats.wilcoxon` through
# `kqlib.stats.paired_table`) of own vs union and own vs intersection, separately for suppression
# ($\Delta\mathrm{Prob}$), enhancement ($\Delta\mathrm{Prob}$) and Avg. A p-value is missing (with the
# reason) when fewer than two queries are paired or every paired difference is zero.

# %%
PAIRS = [("own", "union"), ("own", "intersection"), ("own", "random")]
tests = stats.paired_table(long, unit=UNIT, column="condition", pairs=PAIRS, value="d_prob",
                           by=["model", "method", "group", "operation"])
kqlib.data_export.write_table("03_query_kn_mapping", "tests", tests, description="Wilcoxon signed-rank tests: own vs the neighbors' sets")
tests.style.format({"mean_a": "{:+.3f}", "mean_b": "{:+.3f}", "median_diff": "{:+.3f}", "statistic": "{:.1f}",
                    "p": "{:.2e}"}, na_rep="").hide(axis="index")

# %% [markdown]
# ## Headline numbers

# %%
finite_or_none = report.finite_or_none


def fmt(x, spec=".2f", missing="not measurable"):
    return missing if x is None else format(x, spec)


lm0 = lms[0]
S = summary.set_index(["model", "method", "group", "condition", "operation"])
T = tests.set_index(["model", "method", "group", "operation", "b"])
notes = {}


def avg_of(group, cond, op="average", col="mean"):
    key = (lm0.name, method0, group, cond, op)
    if key not in S.index or S.loc[key, "n"] == 0:
        notes[f"{group}_{cond}_{op}"] = f"no {group} queries for {lm0.name} / {method0}"
        return None
    return finite_or_none(S.loc[key, col])


def p_of(group, b, op="average"):
    key = (lm0.name, method0, group, op, b)
    if key not in T.index:
        notes[f"p_{group}_own_vs_{b}"] = f"no {group} queries for {lm0.name} / {method0}"
        return None
    p = finite_or_none(T.loc[key, "p"])
    if p is None:
        notes[f"p_{group}_own_vs_{b}"] = T.loc[key, "note"]
    return p


numbers = {"n_models": len(lms), "model0": lm0.name, "method0": method0,
           "enhance_factor": float(enhance_factor), "threshold_kind": threshold_kind}
for g in ("K_C", "K_I"):
    key = g.replace("_", "").lower()  # "kc" | "ki"
    part = mapping[(mapping.model == lm0.name) & (mapping.method == method0) & (mapping.group == g)]
    numbers[f"n_queries_{key}"] = int(part[UNIT].drop_duplicates().shape[0])
    numbers[f"n_facts_{key}"] = int(part.fact_id.nunique())
    for cond in CONDS:
        for op, short in (("average", "avg"), ("suppress", "sup"), ("enhance", "enh")):
            numbers[f"{short}_{cond}_{key}"] = avg_of(g, cond, op)
        numbers[f"avg_{cond}_{key}_ci"] = [avg_of(g, cond, col="ci_low"), avg_of(g, cond, col="ci_high")]
    for b in ("union", "intersection", "random"):
        numbers[f"p_own_vs_{b}_{key}"] = p_of(g, b)
    own, inter = numbers[f"avg_own_{key}"], numbers[f"avg_intersection_{key}"]
    numbers[f"gap_own_inter_{key}"] = None if own is None or inter is None else own - inter
    sup = mapping[(mapping.model == lm0.name) & (mapping.method == method0) & (mapping.group == g)
                  & (mapping.operation == "suppress")]
    numbers[f"flip_own_{key}"] = finite_or_none(sup[sup.condition == "own"].flipped.mean()) if len(sup) else None
    numbers[f"empty_intersection_{key}"] = (
        finite_or_none((sup[sup.condition == "intersection"].n_neurons == 0).mean()) if len(sup) else None)
numbers["n_interventions"] = int(len(mapping))
numbers["n_queries"] = int(mapping[UNIT].drop_duplicates().shape[0])
text_keys = [k for k, v in numbers.items() if k.startswith(("avg_", "sup_", "enh_", "gap_", "flip_", "empty_", "p_"))
             and not k.endswith("_ci")]
for k in text_keys:
    spec = ".1e" if k.startswith("p_") else (".0%" if k.startswith(("flip_", "empty_")) else "+.2f")
    if k.startswith("avg_"):
        spec = ".2f"
    numbers[f"{k}_text"] = fmt(numbers[k], spec)
report.glue_numbers({k: v for k, v in numbers.items() if v is None or isinstance(v, (int, float, str))})

# %% [markdown]
# For {glue:text}`model0` and method {glue:text}`method0` ({glue:text}`n_queries_ki` queries of
# {glue:text}`n_facts_ki` $K_I$ facts, {glue:text}`n_queries_kc` queries of {glue:text}`n_facts_kc` $K_C$
# facts), the mean Avg effect $\tfrac12(|\Delta\mathrm{Prob}_{sup}| + |\Delta\mathrm{Prob}_{enh}|)$ of a query's
# **own** knowledge neurons is {glue:text}`avg_own_ki_text` for $K_I$ facts, against
# {glue:text}`avg_union_ki_text` for the union and {glue:text}`avg_intersection_ki_text` for the intersection
# of its neighbors' neurons, and {glue:text}`avg_random_ki_text` for random neurons (Wilcoxon own vs
# intersection: p = {glue:text}`p_own_vs_intersection_ki_text`; own vs union: p =
# {glue:text}`p_own_vs_union_ki_text`). For $K_C$ facts the same numbers are {glue:text}`avg_own_kc_text`
# (own), {glue:text}`avg_union_kc_text` (union), {glue:text}`avg_intersection_kc_text` (intersection) and
# {glue:text}`avg_random_kc_text` (random). The own − intersection gap is {glue:text}`gap_own_inter_ki_text`
# for $K_I$ and {glue:text}`gap_own_inter_kc_text` for $K_C$. Suppressing its own neurons flips the top-1
# answer of {glue:text}`flip_own_ki_text` of the $K_I$ queries; the neighbors' intersection is empty for
# {glue:text}`empty_intersection_ki_text` of them.

# %% [markdown]
# ## Paper vs this run

# %%
def verdict(ok, why_not=""):
    if ok is None:
        return f"not measurable here{': ' + why_not if why_not else ''}"
    return "reproduced" if ok else "not reproduced"


def lt(a, b):
    return None if a is None or b is None else bool(a < b)


ki_own, ki_inter, ki_union = numbers["avg_own_ki"], numbers["avg_intersection_ki"], numbers["avg_union_ki"]
gap_ki, gap_kc = numbers["gap_own_inter_ki"], numbers["gap_own_inter_kc"]
p_inter = numbers["p_own_vs_intersection_ki"]
rows = [
    dict(claim="K_I: own KNs change p(answer) more than the neighbors' intersection",
         paper="large ΔProb for own KNs, much smaller for the intersection (Fig. 4)",
         **{"this run": f"Avg own {numbers['avg_own_ki_text']} vs intersection {numbers['avg_intersection_ki_text']}"
                        f" (p = {numbers['p_own_vs_intersection_ki_text']})"},
         verdict=verdict(lt(ki_inter, ki_own), "no K_I queries")
         + ("" if p_inter is None or p_inter < 0.05 else " (not significant at 0.05)")
         + (f" (the intersection is empty for {numbers['empty_intersection_ki_text']} of the K_I queries)"
            if numbers["empty_intersection_ki"] else "")),
    dict(claim="K_I: own KNs change p(answer) more than the neighbors' union",
         paper="neighbors' KNs give smaller ΔProb",
         **{"this run": f"Avg own {numbers['avg_own_ki_text']} vs union {numbers['avg_union_ki_text']}"
                        f" (p = {numbers['p_own_vs_union_ki_text']})"},
         verdict=verdict(lt(ki_union, ki_own), "no K_I queries")),
    dict(claim="The own − neighbors gap is smaller for K_C than for K_I",
         paper="smaller gap for consistent facts",
         **{"this run": f"own − intersection: K_I {numbers['gap_own_inter_ki_text']}, "
                        f"K_C {numbers['gap_own_inter_kc_text']}"},
         verdict=verdict(lt(gap_kc, gap_ki), "a class has no queries")),
    dict(claim="Own KNs matter more than random neurons (control)",
         paper="implicit (random neurons are the usual control)",
         **{"this run": f"K_I Avg own {numbers['avg_own_ki_text']} vs random {numbers['avg_random_ki_text']}"},
         verdict=verdict(lt(numbers["avg_random_ki"], ki_own), "no K_I queries")),
]
report.paper_vs_run_table(rows)

# %% [markdown]
# ## Summary
#
# * For each query of a classified fact, its own knowledge neurons, the union and the intersection of its
#   neighbor queries' knowledge neurons, and random neurons from the same layers were suppressed (→ 0) and
#   enhanced (× `enhance_factor`) at the last position; the effect is the relative change of the answer's
#   probability, and Avg is the mean of its absolute values over the two operations.
# * The table "Paper vs this run" states which of the paper's Figure 4 findings hold for the models of this
#   profile; the paired Wilcoxon tests give the per-query evidence.
# * Caveats: the union is usually much *larger* than the own set, so a large union effect does not
#   contradict Query-KN mapping (it contains many neurons, some of them $q$'s own); the intersection is often
#   empty for $K_I$ facts, which makes its ΔProb exactly 0 (the neighbors share no neuron $q$ could use);
#   for a fact with only two queries the union and the intersection are the same single neighbor set, and
#   with $\mathrm{CS}_2 \ge 1/k$ such facts are always $K_C$ at $\theta = 0.3$; relative ΔProb of
#   enhancement is unbounded above for queries with a small $p_{before}$, so Avg can be dominated by
#   enhancement; the smoke profile has a handful of queries, so its p-values mean little.
#
# ## Exercises
#
# 1. Rerun with `-p threshold_kind=otsu`. Which facts change class, and does the $K_I$/$K_C$ gap change?
# 2. The union is larger than the own set. Draw, for each query, a random subset of the union as large as
#    $\mathcal N_q$ (use `kqlib.mapping.MappingQuery` with your own `neighbors`) and compare it with own: is the
#    union's effect explained by its size?
# 3. Replace the relative ΔProb by the change of the log-probability, $\log p_{after} - \log p_{before}$.
#    Which conclusions survive?
# 4. Use the neurons of another method (`-p "methods=['sig']"`): are the KN sets of different methods
#    equally query-specific?

# %%
records = report.records


results = dict(numbers)
results["notes"] = notes
results["summary"] = records(summary)
results["tests"] = records(tests)
results["set_sizes"] = records(sizes.reset_index())
results["figures"] = {"fig4": fig4_path.name}
run = report.run_record(lms, parameters={
    "models": models, "relations": relations, "n_facts_per_relation": n_facts_per_relation, "steps": steps,
    "methods": methods, "t_threshold": t_threshold, "cs_kind": cs_kind, "static_threshold": static_threshold,
    "threshold_kind": threshold_kind, "site": site, "enhance_factor": enhance_factor, "max_queries": max_queries,
    "n_boot": n_boot, "seed": seed, "profile": profile}, started=started)
path = report.write_results("03_query_kn_mapping", results, run)
print(f"results written to {path.name}; wall time {run['wall_time_s']:.1f} s")
