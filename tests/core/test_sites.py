"""Every family in the site table, on a tiny random model built from its config."""

import pytest
import torch

import kqlib
from kqlib.errors import UnsupportedArchitectureError
from kqlib.core.architectures import FAMILIES, family_for
from tiny import FAMILY_MODEL_TYPES, tiny_lm

PROMPT = "the capital of france is"


def test_every_family_in_the_table_has_a_tiny_test():
    covered = {family_for(t).name for t in FAMILY_MODEL_TYPES}
    assert covered == {f.name for f in FAMILIES}


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
@pytest.mark.parametrize("site", ["post", "pre"])
def test_site_is_the_mlp_neuron_vector(model_type, site):
    lm = tiny_lm(model_type)
    assert lm.n_layers == 3
    ids = lm.encode(PROMPT)
    with kqlib.core.hooks.capture(lm, site, position=None) as acts:
        lm.model(ids)
    assert sorted(acts) == [0, 1, 2]
    for a in acts.values():
        assert a.shape == (1, ids.shape[1], lm.n_neurons)
    # the value vector of neuron i is what the output projection adds per unit of its 'post' activation
    if site == "post":
        out_proj = lm.out_proj(1)
        x = torch.zeros(1, 1, lm.n_neurons)
        x[0, 0, 5] = 1.0
        bias = out_proj(torch.zeros_like(x))
        torch.testing.assert_close(out_proj(x)[0, 0] - bias[0, 0], lm.value_vector(1, 5))


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
def test_zeroing_all_neurons_of_a_layer_changes_the_output(model_type):
    lm = tiny_lm(model_type)
    ids = lm.encode(PROMPT)
    base = lm.model(ids).logits
    with kqlib.core.hooks.scale_neurons(lm, [(1, i) for i in range(lm.n_neurons)], 0.0):
        changed = lm.model(ids).logits
    assert not torch.equal(base[0, -1], changed[0, -1])
    torch.testing.assert_close(base[0, :-1], changed[0, :-1])  # earlier positions untouched


def test_unknown_architecture_names_what_to_add():
    with pytest.raises(UnsupportedArchitectureError) as e:
        family_for("mamba")
    msg = str(e.value)
    assert "mamba" in msg and "FAMILIES" in msg and "gate_proj" in msg and "tests/core/test_sites.py" in msg and "kqlib/core/architectures.py" in msg


def test_wrap_rejects_unsupported_model_clearly():
    from transformers import BertConfig, BertForMaskedLM

    from tiny import word_tokenizer

    model = BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    with pytest.raises(UnsupportedArchitectureError, match="bert"):
        kqlib.LM.wrap(model, word_tokenizer())
