"""Knowledge-synapse attribution: integrated gradients over the answer position's attention probabilities.

For a query (prompt, target t) let ``A_l = P_l[0, :, -1, :]`` be layer l's attention row of the last prompt
position (``[heads, T]``) and ``p(X)`` the probability of t when that row is replaced by ``X`` (other layers
compute as usual). With the nodes/weights of a rule (:mod:`.quadrature`, default riemann = mean over
``linspace(0, 1, steps)``):

    score_l = A_l * sum_k w_k dp/dX |_{X = alpha_k A_l}                                 ([heads, T] per layer)

(Hao et al. 2021 self-attention attribution, restricted to the answer row.) :func:`attribute_attention` runs
the same staircase engine as the neuron IG (:mod:`.engine`, with an :class:`~.engine.AttentionRowPath`);
:func:`attribute_attention_reference` reruns the whole prompt per layer.
"""

from __future__ import annotations

import math

import torch

from kqlib.core.attention import attention_hooks, capture_attention, replace_last_row
from kqlib.errors import ParameterError
from kqlib.attribution.engine import AttentionRowPath, base_pass, integrate
from kqlib.attribution.neurons import check_batch_size, check_scores
from kqlib.attribution.adaptive import adaptive_integrate
from kqlib.attribution.quadrature import DEFAULT_TOL, check_rule, path_nodes
from kqlib.attribution.targets import target_token


def attribute_attention_reference(lm, prompt: str, target, *, steps: int | None = None,
                                  rule: str = "riemann") -> torch.Tensor:
    """Plain implementation: for every layer, rerun the whole prompt for all path points. ``[L, H, T]`` float32."""
    check_rule(rule, steps)
    t = target_token(lm, prompt, target)
    ids = lm.encode(prompt)
    with torch.no_grad(), capture_attention(lm) as probs:
        lm.model(ids, use_cache=False)
    rows = torch.stack([probs[l][0, :, -1, :] for l in range(lm.n_layers)])  # [L, H, T]
    alphas, weights = path_nodes(steps, rule)
    alphas = alphas.to(rows.device, rows.dtype)
    scores = torch.zeros(rows.shape, dtype=torch.float32)
    for layer in range(lm.n_layers):
        x = (alphas[:, None, None] * rows[layer]).detach().requires_grad_(True)
        with torch.enable_grad(), attention_hooks(lm, {layer: replace_last_row(x)}):
            logits = lm.model(ids.expand(len(alphas), -1), use_cache=False, logits_to_keep=1).logits[:, -1]
            p = torch.softmax(logits.double() if lm.dtype == torch.float64 else logits.float(), -1)[:, t]
            (g,) = torch.autograd.grad((p * weights.to(p.device, p.dtype)).sum(), x)
        scores[layer] = (rows[layer].double() * g.double().sum(0)).float().cpu()
    return scores


def attribute_attention(lm, prompt: str, target, *, steps: int | None = None, rule: str = "riemann",
                        batch_size: int | None = None, memory_budget: int | None = None,
                        tol: float | None = None) -> torch.Tensor:
    """Knowledge-synapse scores ``[n_layers, n_heads, T]`` (float32, CPU) for ``p(target | prompt)`` (see above).

    ``target``: a token id or a non-empty answer string. ``batch_size`` / ``memory_budget``: chunking, as in
    :func:`kqlib.attribute`. ``rule``/``steps``/``tol``: as in :func:`kqlib.attribute` (``adaptive`` included).
    Equal to :func:`attribute_attention_reference` up to rounding.
    """
    check_rule(rule, steps, tol)
    check_batch_size(batch_size, memory_budget)
    t = target_token(lm, prompt, target)
    ids = lm.encode(prompt)
    path = AttentionRowPath(lm)
    with path.recording():
        base = base_pass(lm, ids, t)
    if rule == "adaptive":
        grad, _ = adaptive_integrate(lm, base, path, t, DEFAULT_TOL if tol is None else float(tol),
                                     batch_size=batch_size, memory_budget=memory_budget)
    else:
        alphas, weights = path_nodes(steps, rule)
        grad = integrate(lm, base, path, alphas, weights, t, batch_size=batch_size, memory_budget=memory_budget)
    scores = (path.values.double() * grad).float().cpu()
    check_scores(scores, base.prob, prompt, t)
    return scores


def knowledge_synapses(scores: torch.Tensor, t: float = 0.2) -> set[tuple[int, int, int]]:
    """Knowledge synapses of one query: ``{(layer, head, key_pos) : score > t * max(score)}``; empty when no
    score is positive. ``scores``: ``[n_layers, n_heads, T]`` from :func:`attribute_attention`."""
    if not 0.0 <= t <= 1.0:
        raise ParameterError(f"threshold t must be in [0, 1], got {t}")
    top = float(scores.max())
    if not math.isfinite(top) or top <= 0:
        return set()
    return {(int(l), int(h), int(k)) for l, h, k in torch.nonzero(scores > t * top).tolist()}
