"""Loading: embedded models, local directories, wrapping, fingerprints and the error messages."""

import importlib.util

import pytest
import torch

import kqlib
from kqlib.errors import MissingDependencyError, OfflineError, UnknownModelError
from tiny import tiny_lm


def test_unknown_name_lists_the_embedded_models():
    with pytest.raises(UnknownModelError) as e:
        kqlib.load("smollm-1b-typo")
    for name in kqlib.EMBEDDED:
        assert name in str(e.value)


def test_hub_id_while_offline_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(OfflineError) as e:
        kqlib.load("gpt2")
    assert "offline" in str(e.value).lower() or "unreachable" in str(e.value)
    assert "smollm2-135m" in str(e.value)


def test_gguf_without_accelerate_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "accelerate" else real(n, *a))
    with pytest.raises(MissingDependencyError, match="pip install accelerate"):
        kqlib.load("smollm2-135m")


def test_local_directory_goes_through_the_hub_code_path(tmp_path):
    lm = tiny_lm("gpt2")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = kqlib.load(str(tmp_path), device="cpu")
    assert again.fingerprint == lm.fingerprint
    ids = lm.encode("the capital of france is")
    assert torch.equal(again.model(ids).logits, lm.model(ids).logits)
    assert again.model.config._attn_implementation == "eager"


def test_fingerprint_is_stable_and_tracks_weight_changes():
    a, b = tiny_lm("llama", seed=0), tiny_lm("llama", seed=0)
    assert a.fingerprint == b.fingerprint
    assert tiny_lm("llama", seed=1).fingerprint != a.fingerprint
    before = a.fingerprint
    with torch.no_grad():
        a.value_vector(2, 5)[3] += 1e-3
    assert a.fingerprint != before
    with torch.no_grad():
        a.value_vector(2, 5)[3] -= 1e-3
    # a round trip of += / -= may not restore the exact float; only assert the change was seen above


def test_answer_tokens_follow_the_prompt():
    lm = tiny_lm("llama")
    assert lm.answer_token_ids("the capital of france is", "paris") == [lm.tokenizer.convert_tokens_to_ids("paris")]
    assert len(lm.answer_token_ids("the capital of france is", "paris berlin")) == 2


@pytest.mark.slow
def test_embedded_smollm2_knows_a_fact(smollm):
    assert (smollm.n_layers, smollm.n_neurons, smollm.family.name) == (30, 1536, "llama")
    prompt = "The capital of France is"
    (paris,) = smollm.answer_token_ids(prompt, "Paris")
    assert smollm.tokenizer.decode([paris]) == " Paris"
    assert int(smollm.next_token_logits(prompt).argmax()) == paris


@pytest.mark.slow
def test_embedded_gemma3_loads_and_attributes_exactly():
    lm = kqlib.load("gemma3-270m")
    assert (lm.n_layers, lm.n_neurons, lm.config.model_type) == (18, 2048, "gemma3_text")
    prompt = "Paris is the capital of"
    assert lm.tokenizer.decode(lm.answer_token_ids(prompt, "France")) == " France"
    ref = kqlib.attribute_reference(lm, prompt, "France", steps=4)
    fast = kqlib.attribute(lm, prompt, "France", steps=4)
    assert ((fast - ref).abs().max() / ref.abs().max()).item() <= 1e-3
