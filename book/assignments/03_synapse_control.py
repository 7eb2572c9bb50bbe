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
# # Assignment 3: a control for knowledge-synapse suppression
#
# The Query Localization assumption says the attention module *selects* the knowledge neurons that answer a
# query. The paper's evidence: scale the attention probabilities of the query's **knowledge synapses** (the
# attention entries of the answer position with the highest attribution) by $\alpha = 0$ and watch the answer
# probability and the KN activations drop, while scaling **irrelevant** entries changes little.
#
# "Changes little" needs a control that is comparable. Here you design one and run the experiment on a tiny
# randomly initialised Llama-style model built from a config (no weights to download, seconds on a CPU).
# The mechanism is what we study here; a random model knows no facts, so its "answer" is just its top-1
# next token.
#
# Tools from `kqlib` (see the book's chapters):
#
# * `kqlib.attribution.attribute_attention(lm, prompt, target, steps)` -> synapse scores `[layers, heads, T]`
#   of the last position's attention row; `knowledge_synapses(scores, t)` -> `{(layer, head, key_pos)}`;
# * `kqlib.core.attention.synapse_entries(synapses)` -> `(layer, head, query_pos=-1, key_pos)` entries;
#   `with kqlib.core.attention.scale_attention(lm, entries, alpha): ...` scales them during a forward pass;
# * `kqlib.attribute(lm, prompt, target, steps)` and `kqlib.knowledge_neurons(scores, t)` -> KNs
#   `{(layer, neuron)}`; `with kqlib.core.hooks.capture(lm) as acts: ...` records `acts[layer]` (`[batch, neurons]`
#   at the last position).
#
# Replace every `# YOUR CODE HERE` / `raise NotImplementedError(...)`.

# %%
import warnings

warnings.filterwarnings("ignore", message=".*IProgress.*")  # tqdm's notebook warning

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

import kqlib
from kqlib.core.attention import scale_attention, synapse_entries
from kqlib.attribution import attribute_attention, knowledge_synapses
from kqlib.core.hooks import capture

torch.set_num_threads(1)
WORDS = ("the capital of france is paris berlin rome germany italy city country which its s language "
         "speaks mother tongue native french german italian").split()
vocab = {w: i for i, w in enumerate(["<unk>", "<pad>"] + WORDS)}
_tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
_tk.pre_tokenizer = pre_tokenizers.Whitespace()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=_tk, unk_token="<unk>", pad_token="<pad>")
config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     initializer_range=0.2)
torch.manual_seed(0)
lm = kqlib.LM.wrap(AutoModelForCausalLM.from_config(config, attn_implementation="eager"), tokenizer, name="tiny")

PROMPTS = ["the capital of france is", "france s capital city is", "the city which is the capital of france is"]
TARGET = {p: int(lm.next_token_logits(p).argmax()) for p in PROMPTS}  # the model's own top-1 answer
SYN_SCORES = {p: attribute_attention(lm, p, TARGET[p], steps=8) for p in PROMPTS}
SYNAPSES = {p: knowledge_synapses(SYN_SCORES[p], t=0.3) for p in PROMPTS}
KNS = {p: kqlib.knowledge_neurons(kqlib.attribute(lm, p, TARGET[p], steps=8), t=0.3) for p in PROMPTS}
N_CONTROLS = 20
for p in PROMPTS:
    print(f"{p!r}: answer {tokenizer.convert_ids_to_tokens(TARGET[p])!r}, {len(SYNAPSES[p])} synapses, "
          f"{len(KNS[p])} KNs")

# %% [markdown]
# ## Q1 (3 points): answer probability under attention scaling
#
# Write `answer_prob(prompt, entries=(), alpha=1.0)`: the probability of `TARGET[prompt]` as the next token
# when the attention `entries` (`(layer, head, query_pos, key_pos)`) are multiplied by `alpha`. Use
# `torch.no_grad()`.

# %%
def answer_prob(prompt, entries=(), alpha=1.0):
    ### BEGIN SOLUTION q1
    with torch.no_grad(), scale_attention(lm, list(entries), alpha):
        next_logits = lm.model(lm.encode(prompt), use_cache=False).logits[0, -1]
    return float(torch.softmax(next_logits.float(), dim=-1)[TARGET[prompt]])
    ### END SOLUTION


# %% tags=["check"]
# check: q1 (1 point)
_p = PROMPTS[0]
_want = float(torch.softmax(lm.next_token_logits(_p), -1)[TARGET[_p]])
assert abs(answer_prob(_p) - _want) < 1e-5, "with no entries answer_prob must be the model's own probability"

# %% tags=["hidden-check"]
# check: q1 (2 points)
for _p in PROMPTS:
    _e = synapse_entries(SYNAPSES[_p])
    with torch.no_grad(), scale_attention(lm, _e, 0.0):
        _want = float(torch.softmax(lm.model(lm.encode(_p)).logits[0, -1].float(), -1)[TARGET[_p]])
    assert abs(answer_prob(_p, _e, 0.0) - _want) < 1e-5, f"answer_prob with suppressed synapses is wrong for {_p!r}"

# %% [markdown]
# ## Q2 (4 points): a layer-matched control
#
# `kqlib.core.attention.random_non_synapses` draws the control anywhere in `[layers, heads, T]`. Layers differ
# a lot in how much a change of their attention matters, so a fair control should change **the same number
# of entries in each layer** as the synapse set does, at entries that are *not* synapses.
#
# Write `matched_control(scores, synapses, seed)` returning a set of `(layer, head, key_pos)` with
#
# * no synapse in it, every entry inside the shape of `scores`;
# * for every layer, as many entries in that layer as `synapses` has;
# * the same set for the same `seed` (use `random.Random(seed)` or `np.random.default_rng(seed)`).

# %%
import random


def matched_control(scores, synapses, seed=0):
    n_layers, n_heads, n_keys = scores.shape
    ### BEGIN SOLUTION q2
    draw = random.Random(seed)
    picked = set()
    for layer in range(n_layers):
        need = sum(1 for s in synapses if s[0] == layer)
        candidates = [(layer, h, k) for h in range(n_heads) for k in range(n_keys) if (layer, h, k) not in synapses]
        picked |= set(draw.sample(candidates, need))
    return picked
    ### END SOLUTION


# %% tags=["check"]
# check: q2 (1 point)
_p = PROMPTS[0]
_c = matched_control(SYN_SCORES[_p], SYNAPSES[_p], seed=0)
assert len(_c) == len(SYNAPSES[_p]), "the control must have as many entries as the synapse set"
assert not (_c & SYNAPSES[_p]), "the control must not contain synapses"

# %% tags=["hidden-check"]
# check: q2 (3 points)
from collections import Counter as _Counter
for _p in PROMPTS:
    _s = SYNAPSES[_p]
    _L, _H, _T = SYN_SCORES[_p].shape
    _c = {tuple(int(v) for v in e) for e in matched_control(SYN_SCORES[_p], _s, seed=3)}
    assert not (_c & _s), "the control contains synapses"
    assert all(0 <= l < _L and 0 <= h < _H and 0 <= k < _T for l, h, k in _c), "control entry out of range"
    assert _Counter(l for l, _, _ in _c) == _Counter(l for l, _, _ in _s), \
        f"per-layer counts differ: control {_Counter(l for l, _, _ in _c)}, synapses {_Counter(l for l, _, _ in _s)}"
    assert matched_control(SYN_SCORES[_p], _s, seed=3) == matched_control(SYN_SCORES[_p], _s, seed=3), \
        "the same seed must give the same control"
_draws = {frozenset(matched_control(SYN_SCORES[PROMPTS[2]], SYNAPSES[PROMPTS[2]], seed=s)) for s in range(10)}
assert len(_draws) > 1, "different seeds should give different controls"

# %% [markdown]
# ## Q3 (3 points): run it
#
# For every prompt compute $\Delta p = p_{\text{scaled}} - p_{\text{original}}$ with $\alpha = 0$ for the
# synapses and for the controls of seeds `0 .. N_CONTROLS-1`. Store
# `delta_p = {prompt: {"synapses": float, "controls": [float] * N_CONTROLS}}` (controls in seed order).

# %%
### BEGIN SOLUTION q3
delta_p = {}
for prompt in PROMPTS:
    p_orig = answer_prob(prompt)
    delta_p[prompt] = {
        "synapses": answer_prob(prompt, synapse_entries(SYNAPSES[prompt]), 0.0) - p_orig,
        "controls": [answer_prob(prompt, synapse_entries(matched_control(SYN_SCORES[prompt], SYNAPSES[prompt], s)),
                                 0.0) - p_orig for s in range(N_CONTROLS)],
    }
### END SOLUTION
for p in PROMPTS:
    c = np.array(delta_p[p]["controls"])
    print(f"{p!r}: synapses {delta_p[p]['synapses']:+.3f}; controls {c.mean():+.3f} +- {c.std():.3f}")

# %% tags=["hidden-check"]
# check: q3 (3 points)
def _prob(_p, _entries):
    with torch.no_grad(), scale_attention(lm, _entries, 0.0):
        return float(torch.softmax(lm.model(lm.encode(_p)).logits[0, -1].float(), -1)[TARGET[_p]])
for _p in PROMPTS:
    _p0 = _prob(_p, [])
    assert abs(delta_p[_p]["synapses"] - (_prob(_p, synapse_entries(SYNAPSES[_p])) - _p0)) < 1e-5, \
        f"delta_p[{_p!r}]['synapses'] is wrong"
    assert len(delta_p[_p]["controls"]) == N_CONTROLS, "one control value per seed"
    for _s in (0, N_CONTROLS - 1):
        _want = _prob(_p, synapse_entries(matched_control(SYN_SCORES[_p], SYNAPSES[_p], _s))) - _p0
        assert abs(delta_p[_p]["controls"][_s] - _want) < 1e-5, f"delta_p[{_p!r}]['controls'][{_s}] is wrong"

# %% [markdown]
# ## Q4 (3 points): the knowledge neurons' side
#
# The paper's second measurement is the activation of the query's KNs. Write `kn_activation(prompt, entries,
# alpha)`: the **sum** of the activations of the neurons `KNS[prompt]` at the last position with the entries
# scaled, and fill `delta_act = {prompt: {"synapses": float, "controls": [float] * N_CONTROLS}}` like Q3.

# %%
def kn_activation(prompt, entries=(), alpha=1.0):
    ### BEGIN SOLUTION q4
    with torch.no_grad(), scale_attention(lm, list(entries), alpha), capture(lm) as recorded:
        lm.model(lm.encode(prompt), use_cache=False)
    return float(sum(recorded[layer][0, neuron] for layer, neuron in KNS[prompt]))
    ### END SOLUTION


### BEGIN SOLUTION q4
delta_act = {}
for prompt in PROMPTS:
    a_orig = kn_activation(prompt)
    delta_act[prompt] = {
        "synapses": kn_activation(prompt, synapse_entries(SYNAPSES[prompt]), 0.0) - a_orig,
        "controls": [kn_activation(prompt, synapse_entries(matched_control(SYN_SCORES[prompt], SYNAPSES[prompt],
                                                                           s)), 0.0) - a_orig
                     for s in range(N_CONTROLS)],
    }
### END SOLUTION
for p in PROMPTS:
    c = np.array(delta_act[p]["controls"])
    print(f"{p!r}: KN activation change, synapses {delta_act[p]['synapses']:+.3f}; controls {c.mean():+.3f}")

# %% tags=["hidden-check"]
# check: q4 (3 points)
def _act(_p, _entries):
    with torch.no_grad(), scale_attention(lm, _entries, 0.0), capture(lm) as _a:
        lm.model(lm.encode(_p))
    return float(sum(_a[l][0, i] for l, i in KNS[_p]))
for _p in PROMPTS:
    _a0 = _act(_p, [])
    assert abs(kn_activation(_p) - _a0) < 1e-4, f"kn_activation({_p!r}) without entries should be {_a0:.4f}"
    assert abs(delta_act[_p]["synapses"] - (_act(_p, synapse_entries(SYNAPSES[_p])) - _a0)) < 1e-4, \
        f"delta_act[{_p!r}]['synapses'] is wrong"
    _want = _act(_p, synapse_entries(matched_control(SYN_SCORES[_p], SYNAPSES[_p], 1))) - _a0
    assert abs(delta_act[_p]["controls"][1] - _want) < 1e-4, f"delta_act[{_p!r}]['controls'][1] is wrong"

# %% [markdown]
# ## Q5 (2 points): how unusual is the synapse effect?
#
# For each prompt, the empirical p-value of the synapse effect against the control distribution:
# $(1 + \#\{\text{controls with } |\Delta p| \ge |\Delta p_{\text{syn}}|\}) / (1 + N_{\text{controls}})$.
# Store `p_values = {prompt: float}`.

# %%
### BEGIN SOLUTION q5
p_values = {prompt: (1 + sum(abs(c) >= abs(d["synapses"]) for c in d["controls"])) / (1 + len(d["controls"]))
            for prompt, d in delta_p.items()}
### END SOLUTION
print(p_values)

# %% tags=["hidden-check"]
# check: q5 (2 points)
for _p, _d in delta_p.items():
    _want = (1 + sum(abs(c) >= abs(_d["synapses"]) for c in _d["controls"])) / (1 + len(_d["controls"]))
    assert abs(p_values[_p] - _want) < 1e-12, f"p_values[{_p!r}] should be {_want:.4f}"

# %% [markdown]
# ## Q6 (written, graded by hand)
#
# What does your control rule out that an unmatched control (random entries anywhere) does not? Name one
# further confound that your control does *not* rule out and say how you would control it. What can a
# randomly initialised model tell us about the paper's claim, and what can it not?
#
# ### BEGIN SOLUTION q6
# Matching the count per layer rules out "any change of that many entries in those layers hurts": layers
# differ in sensitivity, and an unmatched control can land mostly in insensitive layers and make the synapse
# effect look special when it is not. It does not match the attention mass removed: synapses are chosen by
# attribution, which favours large attention weights, so zeroing them removes more probability mass than
# zeroing random entries. A stronger control matches the removed mass too (sample non-synapses per layer
# and head with a similar total attention weight, or rank-match by attention) or renormalises rows.
# A random model shows the pipeline and the control work and that attribution picks entries that matter
# for its output; it says nothing about stored facts, since a random model knows none.
# ### END SOLUTION
