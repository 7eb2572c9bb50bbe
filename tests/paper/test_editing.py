import contextlib
import hashlib
import math

import pytest
import torch

from kqlib.paper.editing import (
    DEFAULT_PPL_TEXTS,
    erase_neurons,
    evaluate_edit,
    perplexity,
    predict,
    update_neurons,
)
from kqlib.errors import ParameterError
from tiny import tiny_lm

PROMPT = "the capital of france is"
NEURONS = [(0, 1), (1, 5), (2, 7), (2, 8), (1, 5)]  # duplicate on purpose


def _weights_sha(lm) -> str:
    h = hashlib.sha256()
    for name, p in lm.model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _emb_bytes(lm) -> bytes:
    return lm.model.get_input_embeddings().weight.detach().clone().numpy().tobytes()


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_erase_changes_logits_and_restores_bit_exactly(model_type):
    lm = tiny_lm(model_type)
    sha, fp, emb = _weights_sha(lm), lm.fingerprint, _emb_bytes(lm)
    base = lm.next_token_logits(PROMPT)
    with erase_neurons(lm, NEURONS) as touched:
        assert touched == [(0, 1), (1, 5), (2, 7), (2, 8)]
        for l, i in touched:
            assert torch.count_nonzero(lm.value_vector(l, i)) == 0
        assert torch.count_nonzero(lm.value_vector(0, 0)) > 0  # neighbours untouched
        assert not torch.equal(lm.next_token_logits(PROMPT), base)
        assert lm.fingerprint != fp
        assert _emb_bytes(lm) == emb  # GPT-2 ties wte and lm_head: embeddings are never written
    assert _weights_sha(lm) == sha and lm.fingerprint == fp
    assert torch.equal(lm.next_token_logits(PROMPT), base)


def test_restores_after_exception_and_on_tied_embeddings():
    lm = tiny_lm("gemma")  # ties input embeddings and the LM head
    assert lm.model.get_input_embeddings().weight is lm.model.get_output_embeddings().weight
    sha, emb = _weights_sha(lm), _emb_bytes(lm)
    old, new = lm.answer_token_ids(PROMPT, "paris")[0], lm.answer_token_ids(PROMPT, "rome")[0]
    with pytest.raises(RuntimeError, match="boom"):
        with update_neurons(lm, NEURONS, old, new):
            assert _weights_sha(lm) != sha and _emb_bytes(lm) == emb
            raise RuntimeError("boom")
    assert _weights_sha(lm) == sha
    with pytest.raises(RuntimeError):
        with erase_neurons(lm, NEURONS):
            raise RuntimeError("boom")
    assert _weights_sha(lm) == sha


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_update_rule(model_type):
    lm = tiny_lm(model_type)
    old, new = lm.answer_token_ids(PROMPT, "paris"), lm.answer_token_ids(PROMPT, "rome")
    emb = lm.model.get_input_embeddings().weight.detach()
    e_o, e_n = emb[old[0]].clone(), emb[new[0]].clone()
    originals = {n: lm.value_vector(*n).clone() for n in NEURONS}
    sha = _weights_sha(lm)
    with update_neurons(lm, NEURONS, old, new, lambda1=1.0, lambda2=8.0):  # lists of ids: first token
        for n, v in originals.items():
            expected = v - v.norm() / e_o.norm() * e_o + 8.0 * v.norm() / e_n.norm() * e_n
            torch.testing.assert_close(lm.value_vector(*n), expected)
    assert _weights_sha(lm) == sha


def test_update_with_zero_lambdas_is_identity():
    lm = tiny_lm("llama")
    sha = _weights_sha(lm)
    base = lm.next_token_logits(PROMPT)
    with update_neurons(lm, NEURONS, 5, 6, lambda1=0.0, lambda2=0.0):
        assert _weights_sha(lm) == sha
        assert torch.equal(lm.next_token_logits(PROMPT), base)
    assert _weights_sha(lm) == sha


def test_bad_neurons_and_ids():
    lm = tiny_lm("llama")
    sha = _weights_sha(lm)
    with pytest.raises(ParameterError, match="out of range"):
        with erase_neurons(lm, [(0, 1), (lm.n_layers, 0)]):
            pass
    with pytest.raises(ParameterError, match="out of range"):
        with erase_neurons(lm, [(0, lm.n_neurons)]):
            pass
    with pytest.raises(ParameterError, match="pairs"):
        with erase_neurons(lm, [3]):
            pass
    with pytest.raises(ParameterError, match="vocabulary"):
        update_neurons(lm, [(0, 1)], 10**6, 1)
    assert _weights_sha(lm) == sha


# ------------------------------------------------------------------------------------ metrics


def test_perplexity_matches_manual_nll():
    lm = tiny_lm("llama")
    texts = ["the sky is yellow .", "birds live in the sea", "apples"]  # the 1-token text is skipped
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = lm.encode(t)
            if ids.shape[1] < 2:
                continue
            logp = torch.log_softmax(lm.model(ids).logits[0, :-1].double(), -1)
            nll -= float(logp.gather(1, ids[0, 1:, None]).sum())
            n += ids.shape[1] - 1
    assert perplexity(lm, texts) == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert len(DEFAULT_PPL_TEXTS) >= 10 and perplexity(lm) > 1.0
    with pytest.raises(ParameterError):
        perplexity(lm, ["apples"])


@contextlib.contextmanager
def force_token(lm, token_id: int, bonus: float = 100.0):
    """A constructed 'edit': every next-token prediction becomes ``token_id``."""
    def hook(_mod, _args, out):
        out = out.clone()
        out[..., token_id] += bonus
        return out

    handle = lm.model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _queries(lm):
    prompts = ["the capital of france is", "the capital of italy is", "paris is the capital of",
               "the mother tongue of a french", "who plays jazz piano in", "birds live under the"]
    top = predict(lm, [(p, 0) for p in prompts])["top1"].tolist()
    return [(p, t) for p, t in zip(prompts, top)]  # targets = the unedited model's top-1


def test_evaluate_edit_on_constructed_cases():
    lm = tiny_lm("llama")
    qs = _queries(lm)
    edited, neighbors, unrelated = qs[:1], qs[1:3], qs[3:]
    texts = ["the sky is yellow .", "birds live in the sea"]
    forced = next(t for t in range(4, 40) if t not in {q[1] for q in qs})

    noop = evaluate_edit(lm, contextlib.nullcontext, edited, neighbors, unrelated, texts, task="erase")
    assert (noop["rel"], noop["gen"], noop["loc"], noop["dppl"], noop["dprob"]) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert noop["avg"] == pytest.approx(1 / 3) and noop["n_neighbors"] == 2 and noop["rel_before"] == 0.0

    erase = evaluate_edit(lm, lambda: force_token(lm, forced), edited, neighbors, unrelated, texts)
    assert (erase["rel"], erase["gen"], erase["loc"]) == (1.0, 1.0, 0.0)
    assert erase["avg"] == pytest.approx(2 / 3) and erase["dprob"] < -0.99 and erase["dppl"] > 0

    upd = evaluate_edit(lm, force_token(lm, forced), edited, neighbors, unrelated, None,  # a CM object works
                        task="update", new_target_id=[forced])
    assert (upd["rel"], upd["gen"], upd["loc"]) == (1.0, 1.0, 0.0)
    assert upd["dprob_new"] > 1.0 and math.isnan(upd["dppl"]) and upd["task"] == "update"
    wrong = evaluate_edit(lm, lambda: force_token(lm, forced), edited, neighbors, unrelated, None,
                          task="update", new_target_id=qs[0][1])  # o' = old answer, never predicted now
    assert wrong["rel"] == 0.0 and wrong["rel_before"] == 1.0


def test_evaluate_real_erase_and_errors():
    lm = tiny_lm("gpt2")
    qs = _queries(lm)
    sha = _weights_sha(lm)
    all_neurons = [(l, i) for l in range(lm.n_layers) for i in range(lm.n_neurons)]
    res = evaluate_edit(lm, lambda: erase_neurons(lm, all_neurons), qs[:2], qs[2:3], qs[3:], ["the sky is yellow ."])
    for key in ("rel", "gen", "loc", "avg"):
        assert 0.0 <= res[key] <= 1.0
    assert res["ppl_after"] != res["ppl_before"] and _weights_sha(lm) == sha
    empty = evaluate_edit(lm, contextlib.nullcontext, qs[:1], [], qs[3:], None)
    assert math.isnan(empty["gen"]) and math.isnan(empty["avg"])
    with pytest.raises(ParameterError, match="new_target_id"):
        evaluate_edit(lm, contextlib.nullcontext, qs[:1], [], [], None, task="update")
    with pytest.raises(ParameterError, match="task"):
        evaluate_edit(lm, contextlib.nullcontext, qs[:1], [], [], None, task="rewrite")
    with pytest.raises(ParameterError, match="pairs"):
        evaluate_edit(lm, contextlib.nullcontext, ["just a prompt"], [], [], None)


def test_evaluate_edit_cache_reuses_unedited_measurements():
    lm = tiny_lm("llama")
    qs = _queries(lm)
    texts = ["the sky is yellow ."]
    neurons = [(1, i) for i in range(20)]
    cache: dict = {}
    first = evaluate_edit(lm, lambda: erase_neurons(lm, neurons), qs[:1], qs[1:3], qs[3:], texts, cache=cache)
    assert ("ppl", tuple(texts)) in cache and len(cache) == 1 + len(qs)
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        second = evaluate_edit(lm, lambda: erase_neurons(lm, neurons), qs[:1], qs[1:3], qs[3:], texts, cache=cache)
    finally:
        handle.remove()
    assert len(calls) == len(qs) + len(texts)  # only the edited model ran
    fresh = evaluate_edit(lm, lambda: erase_neurons(lm, neurons), qs[:1], qs[1:3], qs[3:], texts)
    for res in (second, fresh):
        assert {k: v for k, v in res.items() if v == v} == {k: v for k, v in first.items() if v == v}  # v == v: not NaN
