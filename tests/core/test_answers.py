"""The one p(answer): LM.answer_probabilities against a plain per-prompt softmax, batched against unbatched."""

import pytest
import torch

from kqlib.core.hooks import scale_neurons
from kqlib.errors import ParameterError
from tiny import tiny_lm

PROMPTS = ["a b c", "b c d e f", "c", "d e f g h i j"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_matches_a_plain_softmax_and_the_batched_path(family):
    lm = tiny_lm(family)
    targets = [3, 5, 7, 11]
    a = lm.answer_probabilities(PROMPTS, targets, extra_id=2)
    for i, (prompt, t) in enumerate(zip(PROMPTS, targets)):
        logits = lm.model(lm.encode(prompt)).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        assert float(a["p"][i]) == pytest.approx(float(probs[t]), rel=1e-6)
        assert int(a["rank"][i]) == int((logits > logits[t]).sum()) + 1
        assert int(a["top1"][i]) == int(logits.argmax())
        assert float(a["p_extra"][i]) == pytest.approx(float(probs[2]), rel=1e-6)
    b = lm.answer_probabilities(PROMPTS, targets, batch_size=3)  # left-padded batches of 3 and 1
    assert torch.allclose(a["p"], b["p"], rtol=1e-4, atol=1e-7) and torch.equal(a["top1"], b["top1"])


def test_active_hooks_apply_and_bad_input_is_refused():
    lm = tiny_lm("llama")
    before = lm.answer_probabilities(["a b c"], [3])["p"]
    with scale_neurons(lm, [(0, i) for i in range(lm.n_neurons)], factor=0.0):
        after = lm.answer_probabilities(["a b c"], [3])["p"]
    assert not torch.equal(before, after)
    with pytest.raises(ParameterError, match="2 prompts but 1 target"):
        lm.answer_probabilities(["a", "b"], [1])
    empty = lm.answer_probabilities([], [])
    assert empty["p"].numel() == 0
