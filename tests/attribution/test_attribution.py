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
    with kqlib.core.hooks.scale_neurons(lm, [(2, i) for i in range(lm.n_neurons)], 0.0):
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
    for steps in (0, -3, 2.5, "20", True):
        with pytest.raises(ParameterError, match="steps"):
            attribute(lm, PROMPT, "paris", steps=steps)
    with pytest.raises(ParameterError, match="rule"):
        attribute(lm, PROMPT, "paris", rule="simpson")
    with pytest.raises(ParameterError, match="site"):
        attribute(lm, PROMPT, "paris", site="mid")


@pytest.mark.slow
def test_smollm_fast_matches_reference(smollm):
    prompt = "The capital of France is"
    ref = attribute_reference(smollm, prompt, "Paris", steps=6)
    fast = attribute(smollm, prompt, "Paris", steps=6)
    assert rel_err(fast, ref) <= 1e-3  # fp32 reference itself is ~1e-4 off the fp64 truth
    assert torch.topk(fast.flatten(), 5).indices.tolist() == torch.topk(ref.flatten(), 5).indices.tolist()


# ------------------------------------------------------------------------------ rules, targets, chunks


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma3_text"])
@pytest.mark.parametrize("rule,steps", [("gauss", 5), ("riemann", 1), ("gauss", 1)])
def test_rules_fast_equal_reference_float64(model_type, rule, steps):
    lm = tiny_lm(model_type, dtype=torch.float64)
    for method in ("ig", "sig"):
        ref = attribute_reference(lm, PROMPT, "paris", method=method, steps=steps, rule=rule)
        fast = attribute(lm, PROMPT, "paris", method=method, steps=steps, rule=rule, batch_size=4)
        assert rel_err(fast, ref) <= 1e-9, (model_type, rule, steps, method)


def test_gauss_nodes_integrate_polynomials_exactly_and_riemann_is_the_papers_mean():
    from kqlib.attribution import path_nodes

    alphas, w = path_nodes(4, "gauss")
    for degree in range(8):  # n Gauss-Legendre nodes: exact up to degree 2n - 1
        assert abs(float((w * alphas ** degree).sum()) - 1 / (degree + 1)) < 1e-14
    alphas, w = path_nodes(20, "riemann")
    assert torch.equal(alphas, torch.linspace(0, 1, 20, dtype=torch.float64)) and torch.allclose(w, torch.full((20,), 0.05, dtype=torch.float64))
    alphas, w = path_nodes(1, "riemann")  # attribution patching: a * grad p(a)
    assert alphas.tolist() == [1.0] and w.tolist() == [1.0]


def test_single_riemann_node_is_attribution_patching():
    lm = tiny_lm("llama", dtype=torch.float64)
    ids = lm.encode(PROMPT)
    t = lm.answer_token_ids(PROMPT, "paris")[0]
    with kqlib.core.hooks.capture(lm) as acts:
        lm.model(ids)
    expected = []
    for layer in range(lm.n_layers):
        a = acts[layer][0].clone().requires_grad_(True)
        with torch.enable_grad(), kqlib.core.hooks.set_neurons(lm, layer, a):
            p = torch.softmax(lm.model(ids).logits[0, -1], -1)[t]
            (g,) = torch.autograd.grad(p, a)
        expected.append(a.detach() * g)
    assert rel_err(attribute(lm, PROMPT, t, steps=1), torch.stack(expected)) <= 1e-9


def test_gauss_with_few_nodes_is_closer_to_the_integral_than_riemann_20():
    lm = tiny_lm("llama", dtype=torch.float64)
    truth = attribute(lm, PROMPT, "paris", steps=64, rule="gauss")
    riemann = rel_err(attribute(lm, PROMPT, "paris", steps=20), truth)
    gauss = rel_err(attribute(lm, PROMPT, "paris", steps=8, rule="gauss"), truth)
    assert gauss < riemann


def test_targets_any_integer_type_or_a_nonempty_answer_and_nothing_else():
    import numpy as np

    lm = tiny_lm("llama", dtype=torch.float64)
    t = lm.answer_token_ids(PROMPT, "paris")[0]
    ref = attribute(lm, PROMPT, t, steps=3)
    for same in (np.int64(t), np.int32(t), torch.tensor(t), "paris"):
        assert torch.equal(attribute(lm, PROMPT, same, steps=3), ref), type(same)
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    for bad in ("", "   ", None, 3.0, -1, vocab, 10 ** 7, True, torch.tensor([1, 2]), torch.tensor(2.0)):
        with pytest.raises(ParameterError):
            attribute(lm, PROMPT, bad, steps=3)


def test_batch_size_must_be_positive_and_results_never_all_zero():
    lm = tiny_lm("llama")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ParameterError, match="batch_size"):
            attribute(lm, PROMPT, "paris", steps=3, batch_size=bad)


def test_invalid_scores_are_refused(monkeypatch):
    from kqlib.attribution import InvalidAttributionError, neurons

    lm = tiny_lm("llama")
    monkeypatch.setattr(neurons, "integrate", lambda lm, base, path, *a, **k: torch.zeros(path.values.shape, dtype=torch.float64))
    with pytest.raises(InvalidAttributionError, match="all zeros"):
        attribute(lm, PROMPT, "paris", steps=3)
    monkeypatch.setattr(neurons, "integrate", lambda lm, base, path, *a, **k: torch.full(path.values.shape, float("nan"), dtype=torch.float64))
    with pytest.raises(InvalidAttributionError, match="non-finite"):
        attribute(lm, PROMPT, "paris", steps=3)


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_fused_head_equals_autograd_softmax(softcap):
    from kqlib.attribution.head import TargetProbability

    torch.manual_seed(0)
    h = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(50, 16, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    for bias in (None, b):
        u = h @ w.T + (0 if bias is None else bias)
        z = torch.tanh(u / softcap) * softcap if softcap else u
        p_ref = torch.softmax(z, -1)[:, 7]
        (g_ref,) = torch.autograd.grad(p_ref.sum(), h)
        p = TargetProbability.apply(h, w, bias, 7, softcap, 8)  # chunks of 8 < vocab 50: the online softmax
        (g,) = torch.autograd.grad(p.sum(), h)
        assert torch.allclose(p, p_ref, rtol=1e-12, atol=0) and torch.allclose(g, g_ref, rtol=1e-10, atol=1e-14)


def test_memory_budget_packs_chunks_and_counts_the_prompt_length():
    from kqlib.attribution.engine import pack_chunks, row_bytes_per_layer

    lm = tiny_lm("llama")
    assert row_bytes_per_layer(lm, 700) > row_bytes_per_layer(lm, 16)
    rows = [(l, k) for l in range(3) for k in range(4)]
    chunks = pack_chunks(rows, 3, per_row_layer=10, fixed_per_row=0, budget=60)
    assert [r for c in chunks for r in c] == rows  # every row once, in order
    assert all(sum((3 - l) * 10 for l, _ in c) <= 60 for c in chunks if len(c) > 1)
    assert pack_chunks(rows, 3, 10, 0, budget=1) == [[r] for r in rows]  # at least one row per chunk
    ref = attribute(lm, PROMPT, "paris", steps=4, batch_size=1)
    for budget in (1, 10 ** 5, 10 ** 12):  # tiny budget = one row per chunk; huge = one chunk
        assert rel_err(attribute(lm, PROMPT, "paris", steps=4, memory_budget=budget), ref) <= 1e-5
