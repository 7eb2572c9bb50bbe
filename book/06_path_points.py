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
# # How many path points?
#
# Integrated gradients is an integral along a path, and every knowledge-neuron score in this book is a
# numerical approximation of it:
#
# $$\mathrm{Attr}(l, i) = a_{l,i} \int_0^1 \frac{\partial p(\alpha a_l)}{\partial a_{l,i}}\, d\alpha
# \;\approx\; a_{l,i} \sum_{k=1}^{n} w_k \frac{\partial p(\alpha_k a_l)}{\partial a_{l,i}} .$$
#
# The paper, like the knowledge-neurons code it builds on, uses the **Riemann** rule with $n = 20$:
# $\alpha_k$ evenly spaced on $[0, 1]$ with both ends, $w_k = 1/n$. **Gauss–Legendre** nodes and weights
# integrate polynomials of degree up to $2n - 1$ exactly, so a smooth integrand needs far fewer points.
# $n = 1$ with the Riemann rule is $a \cdot \nabla p(a)$, the *attribution-patching* estimate.
# The cost of an attribution is proportional to $n$: every node is one gradient of $p$ for every layer
# (the staircase engine of `kqlib.attribution.engine` batches the nodes of all layers).
#
# The Gauss–Legendre rule on $[0, 1]$ takes the roots $\xi_k$ of the Legendre polynomial $P_n$ and maps them,
# $\alpha_k = (\xi_k + 1)/2$, with weights $w_k = \omega_k / 2$ where
# $\omega_k = 2 / \big((1 - \xi_k^2) P_n'(\xi_k)^2\big)$.
#
# The integrand is sharply peaked on some layers and flat on others, so any fixed rule wastes points or
# misses the peak. The book's chapters therefore use the **adaptive** rule (`rule="adaptive"`,
# `kqlib.attribution.adaptive`): per layer, Gauss–Kronrod panels (2 Gauss nodes inside 5 Kronrod nodes) whose
# difference estimates the error; a panel is bisected only while the layer's estimated error exceeds
# `tol` × the largest score. Its diagnostics (estimated error, points per layer, the completeness gap
# $|\sum_i \mathrm{Attr}(l, i) - (p_l(1) - p_l(0))|$) are cached with every attribution. All rules are
# selectable everywhere an attribution is made: `kqlib.attribute(..., rule="gauss", steps=8)`,
# `kq attribute --rule adaptive --tol 0.01`, or a chapter parameter (`-p rule=riemann -p steps=20` reruns a
# chapter with the paper's rule). The rule (and `tol`) is part of the attribution cache key.
#
# **Layers whose outputs are normalised (Gemma2/3).** These models pass each layer's MLP output (and attention
# output) through an RMSNorm before adding it to the residual stream. Scaling the layer's neurons by $\alpha$
# scales that output by $\alpha$, and the norm undoes the scale: $p_l(\alpha)$ is flat except below
# $\alpha^* \approx \sqrt{\varepsilon}/\mathrm{rms}$, and above $\alpha^*$ each neuron's integrand falls like
# $c_i/\alpha$. The $c_i$ sum to about 0, so completeness holds, but each single score depends on the region near
# $\alpha = 0$, where a rule in $\alpha$ puts few nodes (Riemann-20 puts weight 1/20 on $\alpha = 0$ itself).
# With $\alpha = e^s$ the $c/\alpha$ tail becomes a constant. For such paths (`LM.normalized_outputs`) the
# adaptive rule's panels are in $\log\alpha$ on $[10^{-10}, 1]$, and the reference is Gauss–Legendre in
# $\log\alpha$ (`rule="gauss-log"`). Two Gemma3-270M queries (AMD EPYC), against gauss-log-128 (itself within
# 5e-7 of gauss-log-256):
#
# | rule | query 1 error | query 2 error | path points |
# |---|---|---|---|
# | riemann-20 | 1.31 | 0.584 | 360 |
# | gauss-128 | 8.6e-6 | 8.4e-6 | 2,304 |
# | gauss-log-32 | 2.9e-4 | 2.3e-3 | 576 |
# | adaptive, panels in $\alpha$ | 1.4e-3 | 9.1e-4 | 1,100 and 1,180 |
# | adaptive, panels in $\log\alpha$ | 3.5e-3 | 1.1e-3 | 620 and 640 |
#
# Errors are $\max|S - S^*| / \max|S^*|$. Path points are summed over the 18 layers.
#
# This page runs on whole facts, as every chapter does: the facts each model answers on at least two
# phrasings and their answered queries (the book's answer filter, `Chapter.localize`). Against a high-order
# reference (Gauss–Legendre with `reference_points` nodes) it measures, per query, the error
# $\max|S - S^*| / \max|S^*|$ and the Jaccard index of the knowledge-neuron sets ($t$ = `t_threshold`); per
# fact, CS2 and the class ($K_I$ when CS2 < θ) under each rule — does the paper's rule change the paper's
# verdict? — and the fidelity of the cheap rankings. Formulas: `kqlib.paper.path_points`,
# `kqlib.paper.path_rules`.

# %% tags=["parameters"]
models = ["smollm2-135m"]
relations = ["P36", "P103"]
n_facts_per_relation = 1
settings = ["riemann-8", "riemann-20", "gauss-8", "adaptive"]  # path rules compared with the reference
cheap = ["riemann-1", "gauss-4"]  # cheap rankings: 1 point is gradient x activation
reference_points = 32  # Gauss-Legendre nodes of the reference integral
tol = 0.01  # adaptive rule: estimated max abs error / max |score|
site = "post"
t_threshold = 0.2
cs_kind = "cs2"
static_threshold = 0.3  # θ of the class K_I (CS2 below θ)
query_filter = "correct"  # the book's answer filter: "correct" (only queries answered top-1) | "all"
seed = 0
profile = "smoke"

# %%
from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch06_path_points as K

ch = Chapter("06_path_points", globals())

# %% [markdown]
# ## Facts, queries and the book's attributions
#
# The facts and queries of every chapter, attributed with the book's rule (from the cache when an earlier
# chapter ran). Each further rule is one cached attribution per query.

# %%
data = ch.localize(methods=["ig"])
lms = ch.models()
queries = {lm.name: data.datasets[lm.name].queries for lm in lms}
common = dict(reference_points=reference_points, tol=tol, t=t_threshold, site=site)
df = K.per_query(lms, queries, settings, **common)
ch.export("per_query", df, description="one row per (model, query, rule): error vs the reference, KN Jaccard")
per_query = K.per_query_summary(df)
per_query.round(4)

# %% [markdown]
# ## Error and agreement per rule
#
# Left: median relative error $\max|S - S^*| / \max|S^*|$ over the queries (log scale) against the points
# per layer (the adaptive rule at its mean). Right: mean Jaccard index of the knowledge-neuron sets against the
# reference's. The table above gives the means with 95 % intervals that resample whole facts.

# %%
ch.save(K.path_points_figure(df), "06_path_points", "path_points")

# %% [markdown]
# A rule of order $m$ has an error that falls like $n^{-m}$. The Riemann rule with both end points weights
# each node $1/n$, the trapezoid rule with the end weights off by $1/(2n)$, so its error falls only like $1/n$.
# A knowledge-neuron set changes only when a score crosses $t \max \mathrm{Attr}$, so a small error leaves
# the sets unchanged except for neurons right at the threshold.
#
# ## Does the rule change the verdict?
#
# Per fact: CS2 of its KN sets and its class under each rule, against the reference's. `share_ki` is the
# share of facts in $K_I$, `class_changed` the share whose class differs from the reference's, `cs_abs_diff`
# the mean $|\mathrm{CS2} - \mathrm{CS2}^*|$; intervals resample facts.

# %%
facts = K.per_fact(lms, queries, settings, theta=static_threshold, kind=cs_kind, **common)
ch.export("per_fact", facts, description="one row per (model, fact, rule): CS2 and class vs the reference's")
verdicts = K.fact_summary(facts)
verdicts.round(3)

# %% [markdown]
# ## What the cheap rankings cost in fidelity
#
# With a large model one may want a ranking from one gradient (the 1-point rule, $a \cdot \nabla p(a)$,
# attribution patching) or four Gauss points. Per query: Spearman correlation of all neuron scores and the
# KN-set Jaccard against the reference.

# %%
ranks = K.cheap_rankings(lms, queries, cheap, reference_points=reference_points, site=site, t=t_threshold)
cheap_table = K.cheap_summary(ranks)
cheap_table.round(3)

# %%
ch.glue(K.headline(df, verdicts, cheap_table))

# %% [markdown]
# ## What this run shows
#
# Over {glue:text}`n_queries` answered queries of {glue:text}`n_facts` facts, the paper's rule (Riemann-20)
# has a median relative error of {glue:text}`riemann20_median_error:.2g` (worst model) and a mean KN
# Jaccard of {glue:text}`riemann20_mean_jaccard:.2f`; the adaptive rule {glue:text}`adaptive_median_error:.2g`
# and {glue:text}`adaptive_mean_jaccard:.2f`. Under Riemann-20 the class of
# {glue:text}`riemann20_class_changed:.0%` of the facts differs from the reference's (adaptive:
# {glue:text}`adaptive_class_changed:.0%`). The 1-point ranking has a mean Spearman correlation of
# {glue:text}`one_point_spearman:.2f` with the reference.
#
# Where this matters. The paper makes no claim about integration accuracy, so this page has no
# "Paper vs this run" table; it says whether the paper's rule, applied to these models, decides the same
# verdicts as the integral it estimates.
#
# **Exercises.**
# 1. Rerun with a tighter `tol` (`kq run 06 -p tol=0.001`): how many more points does the adaptive rule use?
# 2. Find the query whose KN set changes most between the 1-point rule and the reference.
# 3. Why does Riemann with both ends have error $O(1/n)$ rather than the trapezoid rule's $O(1/n^2)$?

# %%
ch.finish()
