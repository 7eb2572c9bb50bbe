import pytest
import torch

import kqlib
from kqlib.core.hooks import capture, scale_neurons, set_neurons
from tiny import FAMILY_MODEL_TYPES, tiny_lm

PROMPT = "the capital of france is"


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
def test_noop_interventions_are_bit_identical(model_type):
    lm = tiny_lm(model_type)
    ids = lm.encode(PROMPT)
    base = lm.model(ids).logits
    with scale_neurons(lm, [(0, 1), (2, 7)], 1.0):
        same = lm.model(ids).logits
    assert torch.equal(base, same)
    with capture(lm) as acts:
        lm.model(ids)
    with set_neurons(lm, 1, acts[1][0]):
        same2 = lm.model(ids).logits
    assert torch.equal(base, same2)


def test_scaling_changes_only_chosen_neurons_at_chosen_position():
    lm = tiny_lm("llama")
    ids = lm.encode(PROMPT)
    with capture(lm, position=None) as before:
        lm.model(ids)
    with scale_neurons(lm, [(1, 3), (1, 4)], 2.0):
        with capture(lm, position=None) as after:  # registered later: sees the scaled values
            lm.model(ids)
    diff = (after[1] != before[1]).nonzero().tolist()
    assert {(b, t, n) for b, t, n in diff} <= {(0, ids.shape[1] - 1, 3), (0, ids.shape[1] - 1, 4)}
    torch.testing.assert_close(after[1][0, -1, 3], 2 * before[1][0, -1, 3])


def test_hooks_are_removed_on_exit_and_after_errors():
    lm = tiny_lm("gpt2")
    ids = lm.encode(PROMPT)
    base = lm.model(ids).logits
    n0 = _n_hooks(lm.model)
    with pytest.raises(RuntimeError):
        with scale_neurons(lm, [(0, 0)], 0.0), capture(lm):
            assert _n_hooks(lm.model) > n0
            raise RuntimeError("boom")
    assert _n_hooks(lm.model) == n0
    assert torch.equal(lm.model(ids).logits, base)
