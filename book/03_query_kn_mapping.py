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
# Defaults = the smoke profile (kqlib/book/profiles.toml, chapter "03"); `kq run 03 --profile cpu` passes the cpu
# profile's values.
models = ["smollm2-135m"]
# relations: [] means every ParaRel relation with at least 2 usable patterns
relations = ["P36", "P103"]
# facts the model answers per relation; 0 means all
n_facts_per_relation = 2
steps = 4  # path points of the fixed rules, riemann and gauss (adaptive places its own)
rule = "adaptive"  # path rule: "adaptive" (error-controlled, `tol`) | "riemann" (the paper's, `steps`) | "gauss"
tol = 0.01  # adaptive rule: estimated max abs error / max |score| (see "How many path points?")
methods = ["ig"]  # localization methods (the cpu and paper profiles use all three)
query_filter = "correct"  # the book's answer filter: "correct" (only queries answered top-1) | "all"
t_threshold = 0.2  # per-query KN threshold: score > t * max score
cs_kind = "cs2"  # consistency score that classifies facts (as in chapter 1)
static_threshold = 0.3  # static θ: K_I iff CS is below θ
threshold_kind = "static"  # which θ splits K_C / K_I here: "static" or "otsu"
site = "post"  # neuron site, as in chapter 1
enhance_factor = 2.0  # enhance: multiply the activations by this factor (suppress: set them to 0)
# queries per (model, method, class); 0 means all (a seeded sample otherwise)
max_queries = 12
n_boot = 2000  # bootstrap resamples for the confidence intervals
seed = 0
profile = "smoke"

# %%
from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch03_query_kn_mapping as K

ch = Chapter("03_query_kn_mapping", globals())
assert threshold_kind in ("static", "otsu"), f"threshold_kind must be 'static' or 'otsu', got {threshold_kind!r}"
assert enhance_factor > 1, "enhance_factor must be > 1"

# %% [markdown]
# ## The intervention
#
# Let $\mathcal N_q$ be the knowledge neurons of query $q$ (its neurons with attribution above
# $t \cdot \max$, chapter 1), and $q_1, \dots, q_k$ the *other* queries of the same fact ($q$ excluded). For
# each query we intervene at its last position on one of five neuron sets:
#
# | condition | neurons |
# |---|---|
# | own | $\mathcal N_q$ |
# | union | $\bigcup_{j} \mathcal N_{q_j}$ |
# | intersection | $\bigcap_{j} \mathcal N_{q_j}$ |
# | union_matched (control) | $\lvert\bigcap_{j} \mathcal N_{q_j}\rvert$ neurons drawn at random from the union (empty when the intersection is) |
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
# method, exactly as in chapter 1 (same data, same attributions, same `kqlib.paper.consistency` calls).
#
# If KL held, own, union and intersection would all contain "the fact's" neurons and give similar
# $\Delta\mathrm{Prob}$; under Query-KN mapping own ≫ intersection for $K_I$ facts.

# %% [markdown]
# ## Facts, knowledge neurons and classes
#
# The same calls as chapter 1: `build_dataset` → `localize` (read from the attribution cache when chapter 1
# ran with the same parameters) → `consistency_table` → `classify`.

# %%
lms = ch.models()
data = ch.localize()
cs = ch.call(K.classify_facts, data.consistency(cs_kind))
ch.export("consistency", cs, description="one row per (model, method, fact): consistency score, θ and class")
(cs.groupby(["model", "method", "group"])
 .agg(facts=("fact_id", "size"), mean_cs=(cs_kind, "mean"), theta=("theta", "first"),
      queries_per_fact=("n_queries", "mean"))
 .round(3))

# %% [markdown]
# ## Suppress and enhance
#
# For every query of a classified fact (at most `max_queries` per model × method × class, a seeded sample),
# `kqlib.paper.mapping.run_mapping` runs 1 + 5 conditions × 2 operations forward passes (an empty set needs none) and returns one row per
# (query, condition, operation).

# %%
mapping = ch.call(K.run_chapter_mapping, lms, data, cs)
ch.export("mapping", mapping, figure="03_fig4_query_kn_mapping", description="one row per (query, condition, operation): p(answer) before/after and ΔProb")
print(f"{len(mapping)} interventions")
mapping.head()

# %% [markdown]
# **How big are the sets?** The intersection of the neighbors' sets is often small or empty: an empty set
# is a no-op ($\Delta\mathrm{Prob} = 0$), which is itself the point of the experiment (the neighbors share
# nothing that $q$ could use).

# %%
sizes = K.set_sizes(mapping)
sizes

# %% [markdown]
# ## Figure 4: ΔProb per condition
#
# Mean $\Delta\mathrm{Prob}$ of suppression and enhancement and their Avg, per condition, for $K_C$ and
# $K_I$ facts. The bars are means over queries; the error bars are 95 % **cluster-bootstrap** intervals that
# resample whole facts (all queries of a drawn fact together), because the queries of one fact are
# paraphrases of the same question and their effects move together: resampling queries as if they were
# independent would give intervals that are too narrow (`tests/paper/test_stats.py` shows by how much).

# %%
long = K.with_avg(mapping)
summary = ch.call(K.summary_table, long, mapping)
ch.export("summary", summary, figure="03_fig4_query_kn_mapping", description="Figure 4: mean ΔProb with 95 % CI over facts and flip rate")
ch.save(K.fig4(summary, models, methods[0]), "03_fig4_query_kn_mapping", "fig4")

# %%
K.summary_view(summary)

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
# Wilcoxon's signed-rank test (two-sided, `scipy.stats.wilcoxon` through `kqlib.paper.stats.paired_fact_table`) of
# own vs union, intersection and random, separately for suppression ($\Delta\mathrm{Prob}$), enhancement
# ($\Delta\mathrm{Prob}$) and Avg. **The unit is the fact**: each fact's queries are averaged first, so a fact
# with eight paraphrases counts once, like a fact with two, and `n` is the number of paired facts. `diff` is
# the mean over facts of own − other with a bootstrap interval over facts; it is the quantity the claims
# below are judged on. A p-value is missing (with the reason) when fewer than two facts are paired or every
# paired difference is zero.

# %%
tests = ch.call(K.fact_tests, long)
ch.export("tests", tests, description="Wilcoxon signed-rank tests over facts: own vs the neighbors' sets")
tests.style.format({"mean_a": "{:+.3f}", "mean_b": "{:+.3f}", "median_diff": "{:+.3f}", "statistic": "{:.1f}",
                    "p": "{:.2e}", "diff": "{:+.3f}", "diff_low": "{:+.3f}", "diff_high": "{:+.3f}"},
                   na_rep="").hide(axis="index")

# %% [markdown]
# ## What the claims are judged on
#
# Per fact, the Avg effect of each condition is averaged over its queries; a claim's estimate is the mean
# over facts of own − other, with a 95 % interval that resamples **relations** (facts within: the two-level
# bootstrap of `kqlib.paper.intervals`) when there are at least 8 relations, else facts (`unit` says which),
# and a Wilcoxon p over the same unit. An empty intersection is a no-op ($\Delta\mathrm{Prob} = 0$), so
# "own beats ∩" could be won by empty intersections alone: own − ∩ is judged **only on queries whose ∩ is
# non-empty**, beside ∩ against a random subset of the union *as large as ∩* (if ∩ were just any
# neurons of the neighbors, the two would match).

# %%
contrasts = ch.call(K.claim_contrasts, long, mapping)
ch.export("contrasts", contrasts, description="per model × method × class: mean over facts of own − other (Avg) with its interval in the claims' unit")
K.contrasts_view(contrasts)

# %% [markdown]
# ## Headline numbers

# %%
numbers, claims = ch.call(K.mapping_numbers, lms, mapping, summary, tests, contrasts)
ch.claims_from(claims)
ch.glue(numbers)

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
#
# Generated from `kqlib/book/claims/claims.toml` by the book's one verdict rule (`kqlib.book.claims.verdicts.judge`, see chapter 1):
# each claim is judged on the mean over facts of the per-fact difference own − other in Avg, with its 95 %
# interval over relations (≥ 8 relations) or facts, and the Wilcoxon p over the same unit (table above);
# own vs intersection only on queries with a non-empty intersection. The paper's "smaller gap for
# $K_C$" is not testable this way: $K_C$ facts are *defined* as those whose queries share their knowledge
# neurons, so the neighbors' intersection contains more of a query's own neurons by construction. "KL is a
# special case of QL" is an equivalence claim without a margin; its $K_C$ estimate is shown.

# %%
ch.paper_vs_run()

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
#    $\mathcal N_q$ (use `kqlib.paper.mapping.MappingQuery` with your own `neighbors`) and compare it with own: is the
#    union's effect explained by its size?
# 3. Replace the relative ΔProb by the change of the log-probability, $\log p_{after} - \log p_{before}$.
#    Which conclusions survive?
# 4. Use the neurons of another method (`-p "methods=['sig']"`): are the KN sets of different methods
#    equally query-specific?

# %%
ch.finish(summary=K.records(summary), tests=K.records(tests), contrasts=K.records(contrasts), set_sizes=K.records(sizes.reset_index()))
