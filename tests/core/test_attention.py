import pytest
import torch
import torch.nn as nn

from kqlib.core import attention as A
from kqlib import attribution as AT
from kqlib.errors import ParameterError, UnsupportedArchitectureError
from tiny import FAMILY_MODEL_TYPES, tiny_lm

PROMPT = "the capital of france is"


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _logits(lm, ids):
    with torch.no_grad():
        return lm.model(ids, use_cache=False).logits


def _all_entries(lm, query_pos=-1):
    n_heads = lm.model.config.num_attention_heads if hasattr(lm.model.config, "num_attention_heads") else 4
    return [(l, h, query_pos, k) for l in range(lm.n_layers) for h in range(n_heads) for k in (0, -1, -2)]


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
def test_custom_path_is_exact_and_alpha_one_is_identity(model_type):
    lm = tiny_lm(model_type, dtype=torch.float64)
    ids = lm.encode(PROMPT)
    base = _logits(lm, ids)
    with A.attention_hooks(lm, {0: lambda p: None}):
        same = _logits(lm, ids)
    with A.capture_attention(lm) as probs:
        same2 = _logits(lm, ids)
    with A.scale_attention(lm, _all_entries(lm), 1.0):
        same3 = _logits(lm, ids)
    with A.scale_attention(lm, _all_entries(lm), 1.0, renormalize=True):
        same4 = _logits(lm, ids)
    for other in (same, same2, same3, same4):
        assert torch.equal(base, other)
    T = ids.shape[1]
    assert sorted(probs) == list(range(lm.n_layers))
    assert all(p.shape == (1, 4, T, T) for p in probs.values())
    torch.testing.assert_close(probs[1].sum(-1), torch.ones(1, 4, T, dtype=torch.float64))
    assert lm.model.config._attn_implementation == "eager" and not A._ACTIVE and _n_hooks(lm.model) == 0


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
def test_suppress_changes_logits(model_type):
    lm = tiny_lm(model_type)
    ids = lm.encode(PROMPT)
    base = _logits(lm, ids)
    with A.scale_attention(lm, _all_entries(lm), 0.0):
        changed = _logits(lm, ids)
    assert not torch.allclose(base[0, -1], changed[0, -1])
    torch.testing.assert_close(base[0, :-1], changed[0, :-1], rtol=0, atol=0)  # only the last query was touched


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neo", "llama", "gemma2"])
def test_captured_probs_are_the_eager_attentions(model_type):
    lm = tiny_lm(model_type, dtype=torch.float64)
    ids = lm.encode(PROMPT)
    with torch.no_grad():
        eager = lm.model(ids, output_attentions=True).attentions
        with A.capture_attention(lm, layers=[0, -1]) as probs:
            lm.model(ids)
    assert sorted(probs) == [0, lm.n_layers - 1]
    assert torch.equal(probs[0], eager[0]) and torch.equal(probs[lm.n_layers - 1], eager[-1])


def test_scale_touches_only_chosen_entries_and_renormalizes():
    lm = tiny_lm("llama", dtype=torch.float64)
    ids = lm.encode(PROMPT)
    with A.capture_attention(lm) as before:
        _logits(lm, ids)
    entries = [(1, 2, -1, 0), (1, 2, -1, 1), (-1, 0, 3, 2)]
    with A.scale_attention(lm, entries, 2.0), A.capture_attention(lm) as after:  # capture sees scaled probs
        _logits(lm, ids)
    T = ids.shape[1]
    diff = set()
    for l in range(lm.n_layers):
        for _, h, q, k in (after[l] != before[l]).nonzero().tolist():
            diff.add((l, h, q, k))
    assert {(1, 2, T - 1, 0), (1, 2, T - 1, 1)} <= diff
    assert all(d[0] == 2 or d in {(1, 2, T - 1, 0), (1, 2, T - 1, 1)} for d in diff)  # layer 2 sees new inputs
    torch.testing.assert_close(after[1][0, 2, -1, :2], 2 * before[1][0, 2, -1, :2])
    with A.scale_attention(lm, entries[:2], 0.0, renormalize=True), A.capture_attention(lm, [1]) as renorm:
        _logits(lm, ids)
    row = renorm[1][0, 2, -1]
    assert torch.all(row[:2] == 0)
    torch.testing.assert_close(row.sum(), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ParameterError):
        with A.scale_attention(lm, [(0, 0, T + 3, 0)], 0.0):
            _logits(lm, ids)
    with pytest.raises(ParameterError):
        with A.scale_attention(lm, [(lm.n_layers, 0, -1, 0)], 0.0):
            pass


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neo", "gemma3_text"])
def test_hooks_removed_after_exception(model_type):
    lm = tiny_lm(model_type)
    ids = lm.encode(PROMPT)
    base = _logits(lm, ids)
    n_hooks = _n_hooks(lm.model)
    with pytest.raises(RuntimeError, match="boom"):
        with A.scale_attention(lm, _all_entries(lm), 0.0), A.capture_attention(lm):
            _logits(lm, ids)
            raise RuntimeError("boom")
    assert lm.model.config._attn_implementation == "eager"
    assert not A._ACTIVE and _n_hooks(lm.model) == n_hooks
    assert torch.equal(_logits(lm, ids), base)


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
def test_synapse_attribution_fast_equals_reference(model_type):
    lm = tiny_lm(model_type, dtype=torch.float64)
    fast = AT.attribute_attention(lm, PROMPT, "paris", steps=4, batch_size=5)  # chunks split a layer's path
    ref = AT.attribute_attention_reference(lm, PROMPT, "paris", steps=4)
    T = lm.encode(PROMPT).shape[1]
    assert fast.shape == ref.shape == (lm.n_layers, 4, T)
    assert ref.abs().max() > 0
    assert (fast - ref).abs().max() <= 1e-9 * ref.abs().max()
    assert lm.model.config._attn_implementation == "eager" and not A._ACTIVE and _n_hooks(lm.model) == 0


def test_synapse_scores_are_integrated_gradients():
    """Completeness: sum of a layer's scores ~= p(full row) - p(zero row), up to the Riemann error."""
    lm = tiny_lm("llama", dtype=torch.float64)
    ids = lm.encode(PROMPT)
    t = lm.tokenizer.convert_tokens_to_ids("paris")
    scores = AT.attribute_attention(lm, PROMPT, "paris", steps=200)
    p = torch.softmax(_logits(lm, ids)[0, -1], -1)[t]
    n_heads = scores.shape[1]
    zero_row = [(1, h, -1, k) for h in range(n_heads) for k in range(ids.shape[1])]
    with A.scale_attention(lm, zero_row, 0.0):
        p0 = torch.softmax(_logits(lm, ids)[0, -1], -1)[t]
    assert abs(scores[1].sum().item() - (p - p0).item()) <= 0.02 * abs((p - p0).item()) + 1e-6


def test_knowledge_synapses_threshold():
    scores = torch.zeros(2, 3, 4)
    scores[0, 1, 2], scores[1, 2, 3], scores[1, 0, 0], scores[0, 0, 0] = 1.0, 0.5, 0.2, -3.0
    assert AT.knowledge_synapses(scores, t=0.2) == {(0, 1, 2), (1, 2, 3)}  # 0.2 is not > 0.2
    assert AT.knowledge_synapses(scores, t=0.1) == {(0, 1, 2), (1, 2, 3), (1, 0, 0)}
    assert AT.knowledge_synapses(-scores.abs()) == set()
    with pytest.raises(ParameterError):
        AT.knowledge_synapses(scores, t=1.5)
    assert A.synapse_entries({(1, 2, 3)}) == [(1, 2, -1, 3)]


def test_random_non_synapses_exclude_synapses_and_are_deterministic():
    shape = (3, 4, 5)
    syn = {(0, 0, 0), (1, 2, 3), (2, 3, 4)}
    a = A.random_non_synapses(shape, syn, 20, seed=7)
    assert a == A.random_non_synapses(shape, syn, 20, seed=7)
    assert a != A.random_non_synapses(shape, syn, 20, seed=8)
    assert len(a) == 20 and not (a & syn)
    assert all(0 <= l < 3 and 0 <= h < 4 and 0 <= k < 5 for l, h, k in a)
    assert len(A.random_non_synapses(shape, syn, 57, seed=1)) == 57
    with pytest.raises(ParameterError):
        A.random_non_synapses(shape, syn, 58, seed=1)


class _NoEagerAttention(nn.Module):  # this test module defines no eager_attention_forward
    pass


def test_unsupported_attention_module_raises_clear_error():
    from kqlib.core import hooks as H

    with pytest.raises(UnsupportedArchitectureError, match="_NoEagerAttention"):
        H._family_eager(_NoEagerAttention())


@pytest.mark.slow
def test_smollm_attention_path_exact_and_synapses_matter(smollm):
    prompt = "The capital of France is"
    ids = smollm.encode(prompt)
    t = smollm.answer_token_ids(prompt, "Paris")[0]
    base = _logits(smollm, ids)
    with A.capture_attention(smollm) as probs, A.scale_attention(smollm, [(5, 1, -1, 0)], 1.0):
        same = _logits(smollm, ids)
    assert torch.equal(base, same) and len(probs) == smollm.n_layers

    def p_target(entries):
        with A.scale_attention(smollm, entries, 0.0):
            return torch.softmax(_logits(smollm, ids)[0, -1], -1)[t].item()

    scores = AT.attribute_attention(smollm, prompt, "Paris", steps=6)
    syn = AT.knowledge_synapses(scores)
    control = A.random_non_synapses(scores.shape, syn, len(syn), seed=0)
    p0 = torch.softmax(base[0, -1], -1)[t].item()
    assert p0 - p_target(A.synapse_entries(syn)) > 2 * abs(p0 - p_target(A.synapse_entries(control)))


def test_the_family_table_decides_how_attention_is_reached():
    """One per-family table: attention access is the family's ``attention_probs_module`` (kqlib.core.architectures),
    not a second table keyed by family name in attention.py (which ignored a changed entry)."""
    import dataclasses

    lm = tiny_lm("gpt_neo")
    ids = lm.encode(PROMPT)
    with A.capture_attention(lm) as probs:  # through the table's module: GPT-Neo's attn_dropout
        lm.model(ids)
    assert len(probs) == lm.n_layers
    lm.family = dataclasses.replace(lm.family, attention_probs_module="")  # the entry now says: the interface
    with A.capture_attention(lm) as probs:  # GPT-Neo never calls the interface: nothing is reached
        lm.model(ids)
    assert probs == {}


def test_one_hook_primitive_captures_attention_like_neurons():
    """site_hooks / capture take site="attention" as they take "post": the same P as capture_attention."""
    from kqlib.core import hooks as H

    lm = tiny_lm("llama")
    ids = lm.encode("a b c d")
    with A.capture_attention(lm, layers=[0, 1]) as probs:
        lm.model(ids)
    with H.capture(lm, site="attention", layers=[0, 1], position=-1) as rows, \
            H.capture(lm, site="attention", layers=[1], position=None) as whole:
        lm.model(ids)
    for layer in (0, 1):
        assert torch.equal(rows[layer], probs[layer][:, :, -1])
    assert torch.equal(whole[1], probs[1])
    assert not A._ACTIVE and lm.model.config._attn_implementation == "eager"
