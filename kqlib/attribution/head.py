"""The target probability ``p_t = softmax(z)_t`` of the output head, with its exact gradient, fused.

With ``h [n, d]`` the residual stream after the final norm, ``W [V, d]`` (and bias ``c``) the LM head,
``u = W h + c``, optional soft-capping ``z = s tanh(u / s)`` (else ``z = u``) and ``J_v = dz_v/dh``
(``= W_v``, or ``(1 - tanh^2(u_v / s)) W_v`` with capping):

    p_t = exp(z_t) / sum_v exp(z_v),        dp_t/dh = p_t (J_t - sum_v p_v J_v)              ([n, d])

:class:`TargetProbability` computes both in ONE pass over vocabulary chunks (an online softmax: a running
max, a running sum and a running ``sum_v exp(z_v - max) J_v``), so no ``[n, V]`` tensor and no autograd
softmax graph ever exists: memory is ``n x chunk`` whatever the vocabulary (262k for Gemma 3). The forward
stores the gradient and the backward only scales it. Arithmetic is float32 (float64 for a float64 model),
also for bf16/fp16 weights.
"""

from __future__ import annotations

import torch

VOCAB_CHUNK = 16384


class TargetProbability(torch.autograd.Function):
    """``p = TargetProbability.apply(h, weight, bias, target, softcap, vocab_chunk)`` -> ``[n]``."""

    @staticmethod
    def forward(ctx, h, weight, bias, target: int, softcap, vocab_chunk: int):
        acc_dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
        x = h.detach().to(acc_dtype)
        n, vocab = x.shape[0], weight.shape[0]
        run_max = torch.full((n,), float("-inf"), dtype=acc_dtype, device=x.device)
        run_sum = torch.zeros(n, dtype=acc_dtype, device=x.device)
        run_jac = torch.zeros_like(x)
        z_t = jac_t = None
        for start in range(0, vocab, vocab_chunk):
            w = weight[start:start + vocab_chunk].detach().to(acc_dtype)
            u = x @ w.T
            if bias is not None:
                u = u + bias[start:start + vocab_chunk].detach().to(acc_dtype)
            if softcap:
                th = torch.tanh(u / softcap)
                z, slope = th * softcap, 1 - th * th
            else:
                z, slope = u, None
            new_max = torch.maximum(run_max, z.max(-1).values)
            rescale = torch.exp(run_max - new_max)
            e = torch.exp(z - new_max[:, None])
            run_sum = run_sum * rescale + e.sum(-1)
            run_jac = run_jac * rescale[:, None] + (e if slope is None else e * slope) @ w
            run_max = new_max
            if start <= target < start + vocab_chunk:
                j = target - start
                z_t = z[:, j].clone()
                jac_t = w[j][None, :] if slope is None else slope[:, j, None] * w[j][None, :]
        p_t = torch.exp(z_t - run_max) / run_sum
        grad = p_t[:, None] * (jac_t - run_jac / run_sum[:, None])
        ctx.save_for_backward(grad)
        ctx.input_dtype = h.dtype
        return p_t

    @staticmethod
    def backward(ctx, grad_p):
        (grad,) = ctx.saved_tensors
        return (grad_p[:, None] * grad).to(ctx.input_dtype), None, None, None, None, None


def target_probability(lm, hidden: torch.Tensor, target: int, vocab_chunk: int = VOCAB_CHUNK) -> torch.Tensor:
    """``p(target)`` ``[n]`` (float32 / float64) from the residual stream after the last layer ``hidden [n, d]``:
    final norm(s), then the fused head (differentiable w.r.t. ``hidden``)."""
    for module in lm.final_modules():
        hidden = module(hidden)
    head = lm.model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):  # an unusual head: the plain autograd softmax
        logits = head(hidden).float()
        cap = getattr(lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.softmax(logits, -1)[:, target]
    softcap = getattr(lm.config, "final_logit_softcapping", None) or None
    return TargetProbability.apply(hidden, head.weight, head.bias, int(target), softcap, int(vocab_chunk))
