"""Which token an attribution scores: one resolution rule for every entry point."""

from __future__ import annotations

import numbers

import torch

from kqlib.errors import ParameterError


def vocab_size(lm) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])


def target_token(lm, prompt: str, target) -> int:
    """The target token id.

    * an integer of any type (``int``, NumPy integer, one-element integer tensor) in ``[0, vocab)``: taken as is;
    * a non-empty string (not only whitespace): the answer's first token after the prompt.

    Anything else (``None``, floats, booleans, ``""``, an id out of range) raises
    :class:`~kqlib.errors.ParameterError`: it would otherwise score some other token, silently.
    """
    n_vocab = vocab_size(lm)
    if torch.is_tensor(target):
        if target.numel() != 1 or target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ParameterError(f"a tensor target must be one integer token id, got {target!r}")
        target = int(target.item())
    if isinstance(target, bool):
        raise ParameterError(f"target must be a token id or an answer string, got the boolean {target!r}")
    if isinstance(target, numbers.Integral):
        if not 0 <= int(target) < n_vocab:
            raise ParameterError(f"target token id {int(target)} is out of range: the vocabulary has ids "
                                 f"0..{n_vocab - 1}")
        return int(target)
    if isinstance(target, str):
        if not target.strip():
            raise ParameterError(f"target answer is empty ({target!r}): give the answer text, e.g. 'Paris', "
                                 "or a token id")
        ids = lm.answer_token_ids(prompt, target)
        if not ids:
            raise ParameterError(f"answer {target!r} encodes to no token after {prompt!r}")
        return ids[0]
    raise ParameterError(f"target must be a token id (an integer) or a non-empty answer string, got "
                         f"{type(target).__name__} {target!r}")
