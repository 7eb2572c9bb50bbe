"""Which token an attribution scores: one resolution rule for every entry point."""

from __future__ import annotations

import numbers

import torch

from kqlib.errors import ParameterError


def vocab_size(lm) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])


def max_positions(lm) -> int | None:
    """The most token positions the model takes (its config's ``max_position_embeddings`` / ``n_positions``)."""
    config = getattr(getattr(lm, "model", None), "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_prompt_text(prompt) -> str:
    """Refuse a prompt that is not a non-empty string (the check that needs no model)."""
    if not isinstance(prompt, str):
        raise ParameterError(f"prompt must be a non-empty string, got {type(prompt).__name__} {prompt!r}")
    if not prompt.strip():
        raise ParameterError(f"prompt is empty ({prompt!r}): give the text whose next token is scored")
    return prompt


def check_prompt(lm, prompt) -> None:
    """Refuse what is not a prompt the model can read: not a string, empty (:func:`check_prompt_text`), or longer
    (in tokens, with the tokenizer's special tokens) than the model's positions."""
    check_prompt_text(prompt)
    limit = max_positions(lm)
    # a character is at most 4 byte-level tokens: a prompt shorter than that bound is not encoded here
    if limit is not None and 4 * len(prompt) + 8 > limit:
        n = int(lm.encode(prompt).shape[1])
        if n > limit:
            raise ParameterError(f"prompt is {n} tokens long; {getattr(lm, 'name', 'the model')} takes at most "
                                 f"{limit} positions: shorten it ({prompt[:60]!r}...)")


def target_token(lm, prompt: str, target) -> int:
    """The target token id, after :func:`check_prompt` (the one place every entry point reads a query).

    * an integer of any type (``int``, NumPy integer, one-element integer tensor) in ``[0, vocab)``: taken as is;
    * a non-empty string (not only whitespace): the answer's first token after the prompt.

    Anything else (``None``, floats, booleans, ``""``, an id out of range) raises
    :class:`~kqlib.errors.ParameterError`: it would otherwise score some other token, silently.
    """
    check_prompt(lm, prompt)
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
