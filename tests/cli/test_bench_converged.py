"""`kq bench --converged`'s FLOP count (kernel efficiency = these FLOPs per second / matmul peak) against torch's
own FLOP counter on the staircase of tiny models."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kqlib.attribution.engine import NeuronPath, base_pass, integrate
from kqlib.attribution.quadrature import path_nodes
from kqlib.bench.converged import staircase_flops
from tiny import tiny_lm


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2"])
def test_staircase_flops_is_a_tight_upper_bound_of_the_counted_flops(model_type):
    lm = tiny_lm(model_type)
    prompt = "the capital of france is paris and the capital of germany is"
    ids = lm.encode(prompt)
    target = lm.answer_token_ids(prompt, "berlin")[0]
    path = NeuronPath(lm, "post")
    with path.recording():
        base = base_pass(lm, ids, target)
    points = [3, 5, 2][:lm.n_layers] + [4] * max(0, lm.n_layers - 3)  # layers with different numbers of rows
    alphas = [path_nodes(n, "riemann")[0] for n in points]
    with FlopCounterMode(display=False) as counter:
        integrate(lm, base, path, alphas, [torch.ones(n, dtype=torch.float64) for n in points], target)
    counted = counter.get_total_flops()
    estimate = staircase_flops(lm, ids.shape[1], points)
    # frozen weights: the backward computes input gradients only, so about 2x the forward, not 3x; the excess is
    # the lowest layer's rows, which skip most of their start layer's backward
    assert counted <= estimate <= 1.12 * counted, (estimate / counted)
