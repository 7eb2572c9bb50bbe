"""The fast attribution path equals the plain full-recompute reference, for every family and method."""

import pytest
import torch

import kqlib
from kqlib.attribution import amig_baseline, attribute, attribute_reference, knowledge_neurons
from kqlib.errors import ParameterError
from tiny import FAMILY_MODEL_TYPES, tiny_lm

PROMPT = "the capital of france is"


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
@pytest.mark.parametrize("method", ["ig", "sig", "amig"])
def test_fast_equals_reference_float64(model_type, method):
    lm = tiny_lm(model_type, dtype=torch.float64)
    for site in ("post", "pre"):
        ref = attribute_reference(lm, PROMPT, "paris", method=method, steps=6, site=site)
        fast = attribute(lm, PROMPT, "paris", method=method, steps=6, site=site, batch_size=5)
        assert ref.abs().max() > 0
        assert rel_err(fast, ref) <= 1e-9, (model_type, method, site)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma3_text", "opt"])
def test_fast_equals_reference_float32(model_type):
    lm = tiny_lm(model_type)
    ref = attribute_reference(lm, PROMPT, "paris", steps=8)
    for batch_size in (1, 7, None):
        fast = attribute(lm, PROMPT, "paris", steps=8, batch_size=batch_size)
        assert rel_err(fast, ref) <= 1e-5


def test_one_token_prompt_and_prompt_past_the_sliding_window():
    lm = tiny_lm("gemma3_text", dtype=torch.float64)  # sliding window 4 on two of three layers
    long_prompt = "the capital of france is paris and the capital of germany is"
    for prompt in ("the", long_prompt):
        ref = attribute_reference(lm, prompt, "berlin", steps=4)
        assert rel_err(attribute(lm, prompt, "berlin", steps=4), ref) <= 1e-9


def test_ig_completeness_on_one_layer():
    """IG axiom (Sundararajan et al. 2017): sum of scores ~ p(a) - p(0) for the layer, with enough steps."""
    lm = tiny_lm("llama", dtype=torch.float64)
    ids = lm.encode(PROMPT)
    t = lm.answer_token_ids(PROMPT, "paris")[0]
    scores = attribute(lm, PROMPT, t, steps=200)
    p = torch.softmax(lm.model(ids).logits[0, -1], -1)[t]
    with kqlib.hooks.scale_neurons(lm, [(2, i) for i in range(lm.n_neurons)], 0.0):
        p0 = torch.softmax(lm.model(ids).logits[0, -1], -1)[t]
    assert abs(scores[2].sum().item() - (p - p0).item()) < 0.02 * abs((p - p0).item()) + 1e-6


def test_sig_differs_from_ig_except_on_the_last_layer():
    lm = tiny_lm("llama", dtype=torch.float64)
    ig = attribute(lm, PROMPT, "paris", steps=5)
    sig = attribute(lm, PROMPT, "paris", method="sig", steps=5)
    assert rel_err(sig[-1], ig[-1]) < 1e-12  # nothing downstream to hold fixed
    assert rel_err(sig[0], ig[0]) > 1e-6


def test_amig_baseline_and_zero_baseline_equals_ig():
    lm = tiny_lm("llama", dtype=torch.float64)
    b = amig_baseline(lm)
    assert b.shape == (lm.n_layers, lm.n_neurons) and b.abs().sum() > 0
    ig = attribute(lm, PROMPT, "paris", steps=5)
    amig0 = attribute(lm, PROMPT, "paris", method="amig", steps=5, baseline=torch.zeros_like(b))
    assert rel_err(amig0, ig) < 1e-12
    assert rel_err(attribute(lm, PROMPT, "paris", method="amig", steps=5), ig) > 1e-6


def test_knowledge_neurons_threshold():
    s = torch.tensor([[0.0, 1.0, 0.25], [0.19, -3.0, 0.5]])
    assert knowledge_neurons(s, 0.2) == {(0, 1), (0, 2), (1, 2)}
    assert knowledge_neurons(s, 0.3) == {(0, 1), (1, 2)}
    assert knowledge_neurons(-s.abs(), 0.2) == set()
    with pytest.raises(ParameterError):
        knowledge_neurons(s, 1.5)


def test_bad_parameters_are_explained():
    lm = tiny_lm("llama")
    with pytest.raises(ParameterError, match="method must be one of"):
        attribute(lm, PROMPT, "paris", method="gradcam")
    with pytest.raises(ParameterError, match="steps"):
        attribute(lm, PROMPT, "paris", steps=1)
    with pytest.raises(ParameterError, match="site"):
        attribute(lm, PROMPT, "paris", site="mid")


@pytest.mark.slow
def test_smollm_fast_matches_reference(smollm):
    prompt = "The capital of France is"
    ref = attribute_reference(smollm, prompt, "Paris", steps=6)
    fast = attribute(smollm, prompt, "Paris", steps=6)
    assert rel_err(fast, ref) <= 1e-3  # fp32 reference itself is ~1e-4 off the fp64 truth
    assert torch.topk(fast.flatten(), 5).indices.tolist() == torch.topk(ref.flatten(), 5).indices.tolist()
