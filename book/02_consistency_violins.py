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
# # How consistent are facts? The distribution
#
# **The claim** (paper Figure 3 and §3.2). The paper shows the distribution of the consistency score
# $\mathrm{CS}_2$ as violin plots, with a line at $\theta = 0.3$ ("we select a threshold of 0.3 as an
# example"): most facts lie below it, and GPT-2, the smallest model, has fewer inconsistent facts than the
# LLaMAs ("larger models … are more likely to store a single fact across multiple neurons").
#
# This chapter draws the same distribution per relation and model, then asks how much the $K_I$ share
# depends on the choices that the paper leaves open: the per-query knowledge-neuron threshold $t$, the
# consistency threshold $\theta$, and *which* neurons are attributed (the true intermediate activation,
# `post`, or the pre-activation that the authors' code hooks, `pre`). The definitions are those of
# chapter 1: $\mathcal N_q = \{(l,i): \mathrm{Attr}_q(l,i) > t\max\mathrm{Attr}_q\}$,
# $\mathrm{CS}_2 = \frac{1}{|\mathcal U|}\sum_{n\in\mathcal U} c(n)/k$ and $K_I \iff \mathrm{CS} < \theta$.
#
# Every figure and table below is drawn from a tidy frame that the chapter also writes as CSV: the links under
# each figure download it (with a one-line schema), so any plot can be redrawn with pandas and seaborn alone.
# The attributions are those of chapter 1, with the book's error-controlled path rule (`rule="adaptive"`, each
# score within `tol` of the integral it estimates; "How many path points?" compares it with the paper's rule).

# %% tags=["parameters"]
# Defaults = the smoke profile (kqlib/book/profiles.toml, chapter "02"); `kq run 02 --profile cpu` passes the cpu
# profile's values.
models = ["smollm2-135m"]
# relations: [] means every ParaRel relation with at least 2 usable patterns
relations = ["P36", "P103"]
# facts the model answers per relation; 0 means all
n_facts_per_relation = 1
steps = 4  # path points of the fixed rules, riemann and gauss (adaptive places its own)
rule = "adaptive"  # path rule: "adaptive" (error-controlled, `tol`) | "riemann" (the paper's, `steps`) | "gauss"
tol = 0.01  # adaptive rule: estimated max abs error / max |score| (see "How many path points?")
methods = ["ig", "sig", "amig"]
query_filter = "correct"  # the book's answer filter: "correct" (only queries answered top-1) | "all"
t_threshold = 0.2  # per-query KN threshold of the violins
cs_kind = "cs2"
static_threshold = 0.3
site = "post"
t_grid = [0.1, 0.2, 0.3, 0.5]  # per-query thresholds of the sensitivity table
theta_grid = [0.1, 0.2, 0.3, 0.5]  # consistency thresholds of the sensitivity table
# the other neuron site; needs new attributions
compare_site = "pre"
site_methods = ["ig"]  # methods attributed again at compare_site
# relations of the site comparison; [] means all of relations
site_relations = ["P103"]
# facts per model for the site comparison; 0 means all
n_site_facts = 1
n_boot = 2000  # bootstrap resamples for the confidence intervals
seed = 0
profile = "smoke"

# %%
from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch02_consistency_violins as K

ch = Chapter("02_consistency_violins", globals())

# %% [markdown]
# ## Data and knowledge neurons
#
# The same facts and attributions as chapter 1 (same parameters, so every attribution comes from the
# on-disk cache when chapter 1 ran before).

# %%
lms = ch.models()
data = ch.localize()
cs = data.consistency(cs_kind)
shares = K.ki_share_table(cs, kind=cs_kind, static=static_threshold, otsu=True, n_boot=n_boot, seed=seed)
ch.export("consistency", cs, figure="02_violins", description="one row per (model, method, fact): consistency scores (the violins)")
ch.export("ki_shares", shares, description="K_I share per model, method and threshold")
cs.groupby(["model", "method"])[[cs_kind]].describe().round(3)

# %% [markdown]
# ## The violins
#
# $\mathrm{CS}_2$ of every fact, per relation (all methods pooled, one dot per fact and method), one panel per
# model; the dashed line is $\theta = 0.3$. Remember the floor: a fact with $k$ queries has
# $\mathrm{CS}_2 \ge 1/k$, so relations with two paraphrases sit at 0.5 or above by construction.
#
# How to read a violin: its width at a height is the density of facts with that $\mathrm{CS}_2$; the dots are the
# facts themselves. A violin mostly below the dashed line is a relation whose facts are mostly $K_I$ at the
# paper's example threshold.

# %%
ch.save(K.violin_figure(cs, models, cs_kind, static_threshold), "02_violins", "violins")

# %% [markdown]
# Per relation: the mean $\mathrm{CS}_2$, the share below $\theta$, and how many of its facts can fall below
# $\theta$ at all (`can_reach_theta`: facts with more than $1/\theta$ phrasings).

# %%
K.floor_table(cs, cs_kind, static_threshold).style.format(
    {"queries_per_fact": "{:.1f}", "mean_cs": "{:.3f}", "below_theta": "{:.0%}", "CS2 floor 1/k": "{:.3f}"})

# %% [markdown]
# ## Smaller model, fewer inconsistent facts?
#
# The $K_I$ share per model (static $\theta$ and Otsu), per method and for ∩ (inconsistent under all
# methods), with 95 % intervals over facts (Wilson for the static θ; for Otsu a bootstrap that re-estimates θ).
# Models are ordered by their number of **MLP neurons** (neurons per layer × layers, the units whose
# consistency is measured), with the total and the non-embedding parameter counts beside it: the two orders
# can disagree (Gemma3-270M has more parameters than SmolLM2-135M, all in its 262k-token embedding, but fewer
# MLP neurons: 36,864 against 46,080).

# %%
K.size_table(shares, ch.sizes()).style.format(
    {"share_ki": "{:.0%}", "ci_low": "{:.0%}", "ci_high": "{:.0%}", "params (M)": "{:.1f}",
     "non-emb. params (M)": "{:.1f}", "MLP neurons": "{:,}"}, na_rep="–").hide(axis="index")

# %% [markdown]
# ## Sensitivity to $t$ and $\theta$
#
# Knowledge-neuron sets are recomputed from the cached scores for every $t$ (no new attribution), and
# facts classified at every $\theta$. Each cell is the share of facts inconsistent under all methods (∩).
# A higher $t$ keeps fewer, stronger neurons per query; a higher $\theta$ calls more facts inconsistent
# (monotone by construction).

# %%
grid = ch.call(K.threshold_grid, data)
ch.export("grid", grid, figure="02_t_theta_grid", description="K_I share per (model, method, t, θ)")
ch.save(K.grid_figure(grid, models, methods), "02_t_theta_grid", "grid")

# %%
grid.pivot_table(index=["model", "method", "t"], columns="theta", values="share_ki").style.format("{:.0%}", na_rep="–")

# %% [markdown]
# ## Which neurons? `post` vs `pre`
#
# This book attributes the MLP's true intermediate activation (`post`: GELU/SiLU output times the up
# projection where there is one, the input of the down projection). The authors' code hooks the
# pre-activation (GPT-2's `c_fc` output, LLaMA's `gate_proj` output): `pre`. Attributing `pre` needs new
# attributions, so this comparison uses a subset of facts (`n_site_facts`, `site_relations`) and methods
# (`site_methods`). For every query we also report how much the two KN sets overlap (Jaccard index).

# %%
site_cs, overlap, site_summary = ch.call(K.site_comparison, data)
ch.export("site_consistency", site_cs, figure="02_site_scatter", description="consistency per fact at the two neuron sites")
ch.export("site_overlap", overlap, description="Jaccard index of each query's KN sets at the two sites")
site_summary.style.format({"mean_cs": "{:.3f}", "ki_static": "{:.0%}", "mean_kns": "{:.1f}"}).hide(axis="index")

# %%
if len(site_cs):
    ch.save(ch.call(K.site_figure, site_cs), "02_site_scatter", "site")

# %% [markdown]
# ## Headline numbers

# %%
numbers, claims = ch.call(K.violin_numbers, ch.sizes(), cs, shares, grid, site_cs, overlap, site_summary)
ch.claims_from(claims)
ch.glue(numbers)

# %% [markdown]
# Over {glue:text}`n_facts` facts of {glue:text}`n_models` model(s) and {glue:text}`n_relations` relations,
# {glue:text}`share_below_static_text` of the (fact, method) scores lie below $\theta = 0.3$ (median
# $\mathrm{CS}_2$ {glue:text}`median_cs:.2f`). Inconsistent under all methods at the static threshold:
# {glue:text}`ki_static_all_smallest_text` of the facts of the smallest model by MLP neurons ({glue:text}`smallest_model`)
# and {glue:text}`ki_static_all_largest_text` of the largest ({glue:text}`largest_model`). Over the
# $t \times \theta$ grid, the ∩ share ranges over {glue:text}`grid_range_text` (a spread of
# {glue:text}`grid_spread_text`), against a 95 % interval of width {glue:text}`headline_ci_width_text` for the
# smallest model's static ∩ share: the threshold choices {glue:text}`grid_vs_ci_text` its sampling error. At the `pre` site ({glue:text}`site_facts` facts) the
# static $K_I$ share is {glue:text}`site_ki_pre_text` against {glue:text}`site_ki_post_text` at `post`, and the
# KN sets of the same query at the two sites overlap with a mean Jaccard index of
# {glue:text}`site_mean_jaccard_text`.

# %% [markdown]
# ## Paper vs this run
#
# Items 2 and 4 of the paper's headline results (items 1, 3 and 5 are checked in chapter 1), and two choices
# the paper leaves open, generated from `kqlib/book/claims/claims.toml` by the book's one verdict rule
# (`kqlib.book.claims.verdicts.judge`; see chapter 1). Claim 2 is measured as the difference of the ∩ static $K_I$ shares
# of the model with the fewest and the most MLP neurons, with Newcombe's interval for a difference of two
# shares (built from the two Wilson intervals, so 0 % against 0 % is not the empty interval [0, 0]); with one
# model it is not measurable. The share of scores below 0.3 resamples relations (facts within) once there are
# at least 8 relations, facts otherwise: the relation sets $k$ and the templates.

# %%
ch.paper_vs_run()

# %% [markdown]
# ## Summary
#
# * The violins show the $\mathrm{CS}_2$ distribution per relation and model; relations with few paraphrases
#   cannot fall below 0.3 because of the $1/k$ floor, so the headline share depends on the relation mix.
# * The size ordering of the paper (GPT-2 below the LLaMAs) is checked between the profile's models, which
#   are far smaller than the paper's.
# * The $t \times \theta$ table shows that the $K_I$ share is as much a function of two free thresholds as a
#   property of the model; the `pre`/`post` comparison shows how much the neuron definition matters.
#
# ## Exercises
#
# 1. Normalize for the floor: classify with $\theta_k = \theta + (1 - \theta)/k$ or compare
#    $(\mathrm{CS}_2 - 1/k)/(1 - 1/k)$. Does the per-relation picture change?
# 2. Run `kq run 02 --profile cpu -p "site_methods=['ig','amig']"`: is the method or the site the bigger
#    source of disagreement?
# 3. Replace $\mathrm{CS}_2$ by $\mathrm{CS}_1$ (`-p cs_kind=cs1`) and redraw the violins: how many facts
#    remain above 0.3?

# %%
ch.finish(ki_shares=K.records(shares.assign(method=shares.method.astype(str))), grid=K.records(grid),
          site_summary=K.records(site_summary),
          per_relation=K.records(K.floor_table(cs, cs_kind, static_threshold).reset_index()))
