"""p(answer) for many prompts, the one implementation: next-token logits (one prompt, or a left-padded batch)
and, from them, each prompt's answer probability, rank and top-1 token. ``LM.answer_probabilities`` and
``LM.next_token_logits_batch`` call these; ParaRel scoring, the edit loop's predictions, the mapping
interventions, the synapse forwards and chapter 00 all go through them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from kqlib.errors import ParameterError


@torch.no_grad()
def next_token_logits_batch(lm, prompts: Sequence[str]) -> torch.Tensor:
    """Next-token logits ``[len(prompts), vocab]`` (float32) of one left-padded forward with an attention mask;
    positions restart at 0 after the padding, so each row equals ``lm.next_token_logits`` up to rounding."""
    ids = [lm.tokenizer(p).input_ids for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ParameterError(f"a prompt encodes to zero tokens: {[p for p, x in zip(prompts, ids) if not x]}")
    tok = lm.tokenizer
    pad = next((int(c) for c in (tok.pad_token_id, tok.eos_token_id) if c is not None), 0)
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in ids], device=lm.device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=lm.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                   use_cache=False)
    return out.logits[:, -1].float()


@torch.no_grad()
def answer_probabilities(lm, prompts: Sequence[str], target_ids: Sequence[int], batch_size: int = 1,
                         extra_id: int | None = None) -> dict[str, torch.Tensor]:
    """The one p(answer): for each prompt, ``p = softmax(logits)[target]`` (float64), ``rank`` (1 + the
    number of tokens with a larger logit), ``top1`` (argmax id) and, with ``extra_id``, ``p_extra``; all
    ``[n]``. ``batch_size`` 1: one forward per prompt (what hooks at position -1 expect, bit-stable);
    larger: left-padded batches (:func:`next_token_logits_batch`). Active hooks apply to these forwards."""
    if len(prompts) != len(target_ids):
        raise ParameterError(f"{len(prompts)} prompts but {len(target_ids)} target ids")
    rows = []
    for i in range(0, len(prompts), max(int(batch_size), 1)):
        chunk = list(prompts[i:i + max(int(batch_size), 1)])
        rows.append(lm.next_token_logits(chunk[0])[None] if len(chunk) == 1 and batch_size <= 1
                    else next_token_logits_batch(lm, chunk))
    if not rows:
        empty = torch.empty(0, dtype=torch.float64)
        out = {"p": empty, "rank": empty.long(), "top1": empty.long()}
        return out | ({"p_extra": empty} if extra_id is not None else {})
    logits = torch.cat(rows).double()
    t = torch.as_tensor([int(x) for x in target_ids], dtype=torch.long, device=logits.device)
    at_t = logits.gather(1, t[:, None])
    probs = torch.softmax(logits, dim=-1)
    out = {"p": probs.gather(1, t[:, None])[:, 0].cpu(), "rank": ((logits > at_t).sum(-1) + 1).cpu(),
           "top1": logits.argmax(-1).cpu()}
    if extra_id is not None:
        out["p_extra"] = probs[:, int(extra_id)].cpu()
    return out
