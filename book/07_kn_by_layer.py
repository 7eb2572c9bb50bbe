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
# # Knowledge neurons by layer
#
# **The question.** The chapters before ask *whether* a fact's knowledge neurons are shared by its phrasings.
# This page asks *where* they are: in which layers of each model do the knowledge neurons (KNs) of a query sit,
# and does that depend on the relation or on the attribution method? Dai et al. (2022) reported for BERT that
# knowledge neurons concentrate in the top layers; the paper under study does not restate it, so nothing here
# is judged against a claim: the page describes.
#
# **Definitions.** A neuron in layer $l$ of a model with $L$ layers has *depth* $d = l/(L-1)$ (0 = first layer,
# 1 = last). For a query $q$ with KN set $N_q$, the share of its KNs in layer $l$ is
# $|N_q \cap \text{layer } l| / |N_q|$; a relation's *layer profile* is the mean of these shares over its queries,
# so each query weighs the same whatever its set size. The *mean KN depth* averages each query's mean depth; its
# 95 % interval resamples whole facts (a fact's phrasings are not independent).
#
# The KN sets are the book's own: the same facts, answer filter, attributions and threshold $t$ as the other
# chapters, read from the attribution cache when they ran before (no new attribution then).

# %% tags=["parameters"]
# Defaults = the smoke profile (kqlib/book/profiles.toml); `kq run 07 --profile cpu` passes the cpu profile's values.
models = ["smollm2-135m"]
# relations: [] means every ParaRel relation with at least 2 usable patterns
relations = ["P36", "P103"]
# facts the model answers per relation; 0 means all
n_facts_per_relation = 2
steps = 4  # path points of the fixed rules, riemann and gauss (adaptive places its own)
rule = "adaptive"  # path rule: "adaptive" (error-controlled, `tol`) | "riemann" (the paper's, `steps`) | "gauss"
tol = 0.01  # adaptive rule: estimated max abs error / max |score| (see "How many path points?")
methods = ["ig"]
t_threshold = 0.2  # per-query KN threshold: score > t * max score
site = "post"  # neuron site: the MLP intermediate activation (input of the down projection)
query_filter = "correct"  # the book's answer filter: "correct" (only queries answered top-1) | "all"
n_boot = 2000  # bootstrap resamples over facts
seed = 0
profile = "smoke"

# %%
from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch07_kn_by_layer as K

ch = Chapter("07_kn_by_layer", globals())

# %% [markdown]
# ## The knowledge neurons

# %%
lms = ch.models()
data = ch.localize()
n_layers = {lm.name: lm.n_layers for lm in lms}
shares = K.layer_shares(data.neurons, n_layers)
summary = ch.call(K.depth_summary, data.neurons, n_layers)
ch.export("layer_shares", shares, figure="07_kn_by_layer", description="mean share of a query's KNs per layer, per model, method and relation")
ch.export("depth_summary", summary, description="mean KN depth and top-third share per model and method, 95 % fact-bootstrap intervals")
data.summary()

# %% [markdown]
# ## Where they sit, per relation
#
# One panel per model (the first method): rows are relations, columns layers, each cell the mean share of a
# query's KNs in that layer (a row sums to 100 %). A dark column shared by all rows is a layer that holds KNs
# whatever the fact; a row with its own dark cells is a relation with layers of its own.

# %%
ch.save(K.layer_figure(shares, models, methods[0]), "07_kn_by_layer", "layers")

# %% [markdown]
# ## How deep, per model and method
#
# Mean KN depth and the share of KNs in the top third of the layers ($d > 2/3$), with 95 % intervals over
# facts. Depth is relative, so models with different numbers of layers compare on one scale.
#
# How to read it: a mean depth near 0.5 with a top-third share near 1/3 is what KNs spread evenly over the
# layers would give; Dai et al.'s finding for BERT would show as a mean depth well above 0.5 and a top-third
# share well above 1/3. The interval is over facts, so with few facts (the smoke profile) it is wide and says
# little. `n_facts` and `n_queries` are what the numbers rest on.

# %%
ch.glue(K.layer_numbers(summary, models, methods[0]))
summary.style.format({c: "{:.2f}" for c in ["mean_depth", "depth_low", "depth_high", "top_third", "top_low", "top_high"]}).hide(axis="index")

# %%
ch.finish(layer_shares=K.records(shares), depth_summary=K.records(summary))

# %% [markdown]
# ## Summary
#
# In this run ({glue:text}`n_models` model(s), method shown first), the mean KN depth of {glue:text}`first_model` is
# {glue:text}`depth_first:.2f` and {glue:text}`top_third_first:.0%` of its KNs sit in the top third of its layers.
#
# - The layer profile says where a model's knowledge neurons sit; the relation rows show whether that place is
#   the relation's own or common to all facts.
# - The mean depth and top-third share compare models of different depths on one scale, with intervals over
#   facts. With the smoke profile (one model, two relations, a handful of facts) they describe, nothing more.
#
# ## Exercises
#
# 1. Rerun with `-p t_threshold=0.1` and `0.5`. Do the KNs move up or down the layers when the threshold keeps
#    more or fewer of them? Why might weak attributions sit in other layers than strong ones?
# 2. Rerun with `-p 'methods=["ig","sig","amig"]'`. Do the three methods agree on the depth? Compare with
#    chapter 1's agreement on *which* neurons.
# 3. With the `cpu` profile, compare SmolLM2 (30 layers) and Gemma3 (18 layers): is the top-third share a fair
#    comparison when the models' layers are not the same kind of unit?
