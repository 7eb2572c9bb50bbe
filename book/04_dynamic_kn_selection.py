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
# # Attention selects the neurons
#
# **The claim** (paper §4.2, Figure 5; the second half of the *Query Localization* assumption). If the
# knowledge neurons a query uses depend on the query (chapter 3), something must route each query to its
# neurons. The paper points at attention: it calls the attention entries that matter most for the answer
# **knowledge synapses**, scales their attention scores by a factor α, and observes that (1) the activations
# of the query's knowledge neurons change, and (2) so does the probability of the answer, both much more
# than when the same number of *irrelevant* attention entries is scaled. A heatmap shows the query's
# knowledge neurons fading after its synapses are suppressed. Hence *Dynamic KN selection*: "the attention
# module contributes to the selection of KNs for answering a query".

# %% tags=["parameters"]
# Defaults = the smoke profile (kqlib/book/profiles.toml, chapter "04"); `kq run 04 --profile cpu` passes the cpu
# profile's values (40 queries per model).
models = ["smollm2-135m"]
# relations: [] means every ParaRel relation with at least 2 usable patterns
relations = ["P36", "P103"]
# facts the model answers per relation; 0 means all
n_facts_per_relation = 1
steps = 4  # path points of the fixed rules, riemann and gauss (adaptive places its own) and of the attention attribution
rule = "adaptive"  # path rule: "adaptive" (error-controlled, `tol`) | "riemann" (the paper's, `steps`) | "gauss"
tol = 0.01  # adaptive rule: estimated max abs error / max |score| (see "How many path points?")
kn_method = "ig"  # localization method of the query's knowledge neurons
query_filter = "correct"  # the book's answer filter: "correct" (only queries answered top-1) | "all"
t_threshold = 0.2  # per-query KN threshold: score > t * max score (chapter 1)
cs_kind = "cs2"  # consistency score of the K_C / K_I labels (chapter 1)
static_threshold = 0.3
site = "post"  # neuron site, as in chapter 1
synapse_t = 0.2  # knowledge synapses: attention attribution > synapse_t * max
alphas = [0.0, 2.0]  # attention scaling factors (0: suppress, 2: enhance)
renormalize = False  # rescale each touched attention row back to its original sum
mass_matched = True  # also scale an attention-mass-matched control (set "matched")
# queries per model (seeded sample of the queries with knowledge neurons); 0 means all
n_queries = 8
n_boot = 2000  # bootstrap resamples for the confidence intervals
seed = 0
profile = "smoke"

# %%
import pandas as pd

from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch04_dynamic_kn_selection as K

ch = Chapter("04_dynamic_kn_selection", globals())
assert alphas and all(a >= 0 for a in alphas), "alphas must be non-negative scaling factors"

# %% [markdown]
# ## Definitions
#
# Let $P^{(l,h)} \in \mathbb R^{T \times T}$ be the attention probabilities of head $h$ in layer $l$ for a
# query $x$ of $T$ tokens, and $A^{(l,h)} = P^{(l,h)}_{T,\cdot}$ their last row (the answer position). With
# $p(X)$ the probability of the answer $o$ when the last rows of layer $l$ are replaced by $X$, the
# **synapse score** of entry $(l, h, k)$ is the integrated gradient (Hao et al. 2021, restricted to the last
# row)
#
# $$S_{l,h,k} = A^{(l,h)}_k \int_0^1 \frac{\partial p(\beta A^{(l)})}{\partial A^{(l,h)}_k}\, d\beta
#   \approx \frac{A^{(l,h)}_k}{m} \sum_{j=1}^m \frac{\partial p(\beta_j A^{(l)})}{\partial A^{(l,h)}_k},$$
#
# and the **knowledge synapses** of the query are $\mathcal K_q = \{(l, h, k) : S_{l,h,k} > t_s \max S\}$
# ($t_s$ = `synapse_t`). The **control** $\mathcal C_q$ is a seeded random set of $|\mathcal K_q|$ entries
# that are not synapses.
#
# **Intervention (Eq. 5).** For $E \in \{\mathcal K_q, \mathcal C_q\}$ and a factor $\alpha$:
# $\tilde P^{(l,h)}_{T,k} = \alpha\, P^{(l,h)}_{T,k}$ for $(l, h, k) \in E$, all else unchanged (rows are
# not renormalised unless `renormalize`). $\alpha = 0$ suppresses, $\alpha = 2$ enhances.
#
# **Measures.** With $a_n$ and $a'_n$ the activations of the query's knowledge neurons $n \in \mathcal N_q$
# (chapter 1) at the last position before and after the intervention,
#
# $$\Delta\mathrm{Act} = \frac{\sum_{n \in \mathcal N_q} \operatorname{sign}(a_n)\,(a'_n - a_n)}{\sum_{n \in \mathcal N_q} |a_n|},
#   \qquad \Delta\mathrm{Prob} = \frac{p'(o \mid x) - p(o \mid x)}{p(o \mid x)}.$$
#
# $\Delta\mathrm{Act}$ is the relative change of the knowledge neurons' summed activation magnitude, measured
# along each neuron's original sign: $-1$ = every knowledge neuron silenced, $0$ = unchanged, $> 0$ =
# strengthened, $< -1$ = pushed past zero to the opposite sign (`kqlib.paper.synapses` documents it, with the
# unsigned variant $\lVert a' - a\rVert / \lVert a \rVert$).

# %% [markdown]
# ## Queries and their knowledge neurons
#
# The facts, attributions and classes of chapter 1 (same parameters, read from the attribution cache); the
# classes only label the queries here.

# %%
lms = ch.models()
chosen, kn_sets, metas = ch.call(K.choose_queries, lms, ch.localize([kn_method], verbose=False))

# %% [markdown]
# ## Scaling the synapses
#
# `kqlib.paper.synapses.run_synapse_experiment`: per query one attention attribution (cached on disk), then one
# forward pass per (set, α); one row per (query, set, α).

# %%
syn = ch.call(K.run_chapter_synapses, lms, chosen, kn_sets, metas)
ch.export("synapses", syn, figure="04_fig5_distributions", description="one row per (query, scaled set, α): ΔAct and ΔProb")
K.per_model_overview(syn)

# %% [markdown]
# **Two controls.** The random control draws its entries uniformly among all non-synapse entries of every layer,
# head and key position; most of those carry almost no attention, so scaling them moves little attention at
# all, and a gap to the synapses could be just "more attention removed". The **mass-matched** control
# (`mass_matched = True`, set `matched`, `kqlib.paper.synapses.mass_matched_non_synapses`) pairs every synapse with
# a non-synapse entry of about the same attention probability (drawn among the 5 closest), so it scales about
# as much attention mass as the synapses. The table shows the mean number of entries and the attention mass
# (summed attention probability of the scaled entries at the last position) per set.

# %%
K.mass_table(syn)

# %%
syn[syn.note != ""][["model", "prompt", "set", "alpha", "note"]].drop_duplicates()

# %% [markdown]
# ## Figure 5 (left): one query's knowledge neurons before and after
#
# The query shown is chosen by a rule: the query of the first model whose knowledge neurons lose the most
# activation when its synapses are suppressed (the smallest ΔAct at the smallest α). Columns are its knowledge
# neurons (at most 40, the largest $|a_n|$ first, then ordered by layer); rows are the activations before any
# intervention, after scaling its synapses by α, and after scaling as many random non-synapses by α.

# %%
fig, heat_info = ch.call(K.heatmap, lms[0], syn, chosen, kn_sets)
if fig is not None:
    ch.save(fig, "04_fig5_heatmap", "heatmap")
pd.Series(heat_info or {"note": "no query with a defined ΔAct"})

# %% [markdown]
# ## Figure 5 (right): synapses vs controls over all queries
#
# The distributions of ΔAct and ΔProb per α, for the knowledge synapses and the random control, one row of
# panels per model.

# %%
ch.save(K.distribution_figure(syn, models), "04_fig5_distributions", "distributions")

# %% [markdown]
# Means over queries of the signed measures and of their sizes ($|\Delta\mathrm{Act}|$, $|\Delta\mathrm{Prob}|$, the
# quantities the test below compares), with 95 % **cluster-bootstrap** intervals that resample whole facts
# (a fact's queries share its subject and answer, so they are not independent), and the share of queries
# whose top-1 answer flips (α < 1: away from the answer; α > 1: to the answer).

# %%
summary = ch.call(K.summary_table, syn)
ch.export("summary", summary, figure="04_fig5_distributions", description="mean ΔAct/ΔProb with 95 % CIs over facts and flip rate")
K.summary_view(summary)

# %% [markdown]
# ## Paired test: synapses vs control
#
# Wilcoxon's signed-rank test (two-sided, `kqlib.paper.stats.paired_fact_table`) of the **size** of the effect,
# $|\Delta\mathrm{Act}|$ and $|\Delta\mathrm{Prob}|$, for the synapses against the control, per model and α,
# with the **fact as the unit**: each fact's queries are averaged first (`n` = paired facts). `diff` is the mean
# over facts of $|\text{effect}|_\text{synapses} - |\text{effect}|_\text{control}$ with its bootstrap interval
# over facts: the same quantity the test compares and the claims below are judged on (a signed mean could
# cancel a large effect of either sign). A missing p-value comes with its reason.

# %%
tests = ch.call(K.fact_tests, syn)
ch.export("tests", tests, description="Wilcoxon signed-rank tests over facts: synapses vs control")
tests.style.format({"mean_a": "{:.3f}", "mean_b": "{:.3f}", "median_diff": "{:+.3f}", "statistic": "{:.1f}",
                    "p": "{:.2e}", "diff": "{:+.3f}", "diff_low": "{:+.3f}", "diff_high": "{:+.3f}"},
                   na_rep="").hide(axis="index")

# %% [markdown]
# ## Headline numbers
#
# Against the mass-matched control, the synapses' own test row above (`b = matched`) is the one to read: it
# asks whether *which* attention entries are scaled matters, once *how much* attention is scaled is equal.

# %%
numbers, claims = ch.call(K.synapse_numbers, lms, syn, summary, tests, heat_info)
ch.claims_from(claims)
ch.glue(numbers)

# %% [markdown]
# For {glue:text}`model0` ({glue:text}`n_queries` queries of {glue:text}`n_facts` facts, on average
# {glue:text}`synapses_per_query:.1f` knowledge synapses and {glue:text}`kns_per_query:.1f` knowledge neurons
# per query), scaling the knowledge synapses by α = {glue:text}`alpha_sup_text` changes the knowledge
# neurons' activation by ΔAct = {glue:text}`act_syn_sup_text` on average, against
# {glue:text}`act_ctrl_sup_text` for as many random non-synapses; in size, mean |ΔAct| is
# {glue:text}`absact_syn_sup_text` against {glue:text}`absact_ctrl_sup_text` (Wilcoxon on |ΔAct| over facts:
# p = {glue:text}`p_act_sup_text`). The answer probability changes by ΔProb = {glue:text}`prob_syn_sup_text`
# against {glue:text}`prob_ctrl_sup_text` (mean |ΔProb| {glue:text}`absprob_syn_sup_text` against
# {glue:text}`absprob_ctrl_sup_text`, p = {glue:text}`p_prob_sup_text`); {glue:text}`flip_syn_sup_text` of the
# answers flip. Enhancing them (α = {glue:text}`alpha_enh_text`) gives ΔAct = {glue:text}`act_syn_enh_text`
# (control {glue:text}`act_ctrl_enh_text`, p = {glue:text}`p_act_enh_text`) and ΔProb =
# {glue:text}`prob_syn_enh_text` (control {glue:text}`prob_ctrl_enh_text`, p = {glue:text}`p_prob_enh_text`).
# The knowledge synapses carry an attention mass of {glue:text}`mass_syn_text` on average, the random
# control {glue:text}`mass_ctrl_text` and the mass-matched control {glue:text}`mass_matched_text`; against
# the mass-matched control, suppression gives a mean |ΔAct| of {glue:text}`absact_matched_sup_text`
# (Wilcoxon over facts against the synapses: p = {glue:text}`p_act_matched_sup_text`).
# The heatmap's query (“{glue:text}`heat_prompt` …”) has ΔAct = {glue:text}`heat_d_act_text` when its
# synapses are suppressed.

# %% [markdown]
# ## Paper vs this run
#
# Generated from `kqlib/book/claims/claims.toml` by the book's one verdict rule (`kqlib.book.claims.verdicts.judge`, see chapter 1).
# Each claim is judged on the mean over facts of $|\text{effect}|_\text{synapses} - |\text{effect}|_\text{control}$
# with its 95 % interval over relations (facts within: the two-level bootstrap of `kqlib.paper.intervals`)
# when there are at least 8 relations, else over facts (each row says which), and the Wilcoxon test over the
# same unit must agree: the mean that is compared is the mean of the quantity that is tested.

# %%
ch.paper_vs_run()

# %% [markdown]
# ## Summary
#
# * Knowledge synapses are the last-row attention entries with the largest integrated-gradients attribution
#   to the answer; scaling them by α (Eq. 5) and, as a control, as many random other entries, shows how
#   much the query's knowledge neurons and its answer depend on what attention routes to the last position.
# * ΔAct measures the knowledge neurons' activation change along their original signs (−1 = silenced);
#   ΔProb the relative change of the answer probability; the paired Wilcoxon tests compare effect sizes
#   query by query.
# * Caveats: the synapses are chosen *by their effect on the answer*, so a larger ΔProb than the control is
#   partly built in; the ΔAct result is the less circular evidence, since the knowledge neurons were found
#   independently (chapter 1). Rows are not renormalised by default, so α = 0 also removes attention mass;
#   try `-p renormalize=True`. The random control draws from every layer, head and key position, including
#   the attention sink at the first token, which carries much of the attention mass.
#
# ## Exercises
#
# 1. Rerun with `-p renormalize=True`: which effects survive when the suppressed mass is redistributed?
# 2. Make the control harder: draw the random entries from the *same layers and heads* as the synapses
#    (edit `kqlib.paper.synapses.synapse_sets`). Does the ΔAct gap shrink?
# 3. Plot ΔAct against ΔProb per query. Do queries whose knowledge neurons fade more also lose more of
#    their answer probability?
# 4. Compare $K_C$ and $K_I$ queries (column `group` of the results table): do attention and the knowledge
#    neurons interact differently for consistent facts?

# %%
ch.finish(heat_query=heat_info, summary=K.records(summary), tests=K.records(tests),
          by_group=K.records(ch.call(K.mean_ci_cluster_by_group, syn)))
