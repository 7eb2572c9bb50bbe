"""Attention probabilities: capture them, scale chosen entries, and attribute p(target) to them.

Everything here acts on the attention *probabilities* ``P [batch, heads, q, k]`` of a layer: the
post-softmax (post-dropout) weights that multiply the values, ``out = P @ V``.

* :func:`attention_hooks` -- ``fns[layer](P) -> new P or None`` for the listed layers; the base of the rest.
* :func:`capture_attention` -- record ``P`` per layer.
* :func:`scale_attention` -- ``P[l, h, q, k] *= alpha`` for chosen entries (optionally renormalised rows).
* :func:`replace_last_row` -- the hook that puts a tensor into the last query row (used by the attribution engine).
* :func:`random_non_synapses`, :func:`synapse_entries` -- control sets and entry lists for :func:`scale_attention`.

Knowledge-synapse attribution (IG over the answer row) lives in :mod:`kqlib.attribution.synapses`.

How ``P`` is reached (the family's ``attention_probs_module`` in :mod:`kqlib.core.architectures`, the one per-family table):

* Families that call transformers' ``ALL_ATTENTION_FUNCTIONS`` (GPT-2, GPT-J, GPT-NeoX, OPT, Llama, Mistral,
  Qwen2/3, Gemma 1/2/3): inside a ``with`` block the model's ``config._attn_implementation`` is switched to
  ``"kq_eager"``, an attention function registered once (with its mask function, the eager one, so the causal
  / sliding-window mask is still built). It calls the family's *own* ``eager_attention_forward`` (scaling,
  soft-capping, GQA, dropout exactly as the model does them), so with no hook returning a tensor the result is
  the eager result itself, bit for bit; when a hook replaces ``P`` the output is recomputed as
  ``P' @ repeat_kv(V)`` with the same matmul. The previous implementation is restored on exit.
* Families with their own attention code route ``P`` through a dropout module (GPT-Neo: ``_attn`` applies
  ``attn_dropout`` right after its softmax): a forward hook on that module replaces its output.

The mechanism itself (the ``kq_eager`` function, the switch and the module hooks) is part of the one hook
primitive, :func:`kqlib.core.hooks.site_hooks` with ``site="attention"``. Hooks and the implementation switch are always undone when the ``with`` block exits, also after an exception.

    with kqlib.core.attention.capture_attention(lm) as probs:     # probs[layer] -> [batch, heads, q, k]
        lm.model(ids)
    with kqlib.core.attention.scale_attention(lm, [(3, 1, -1, 0)], alpha=0.0):   # suppress one entry
        lm.model(ids)
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from typing import Callable, Iterable, Iterator

import torch

from kqlib.errors import ParameterError
from kqlib.core.hooks import KQ_ATTENTION, _ACTIVE, site_hooks  # noqa: F401 (KQ_ATTENTION, _ACTIVE: inspected by tests)
from kqlib.core.hooks import check_layers as _check_layers

ProbsFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def attention_hooks(lm, fns: dict[int, ProbsFn]) -> Iterator[None]:
    """Run ``fns[layer](P)`` on the attention probabilities ``P [batch, heads, q, k]`` of each listed layer:
    :func:`kqlib.core.hooks.site_hooks` with ``site="attention"`` (the one hook primitive)."""
    with site_hooks(lm, fns, "attention"):
        yield


@contextlib.contextmanager
def capture_attention(lm, layers: Iterable[int] | None = None, detach: bool = True) -> Iterator[dict]:
    """Record attention probabilities: ``probs[layer]`` is ``[batch, heads, q, k]`` of the layer's last call."""
    probs: dict[int, torch.Tensor] = {}
    layers = range(lm.n_layers) if layers is None else layers

    def make(layer):
        def fn(p):
            probs[layer] = p.detach().clone() if detach else p
            return None

        return fn

    with attention_hooks(lm, {l: make(l) for l in _check_layers(lm, layers)}):
        yield probs


def _resolve(index: torch.Tensor, size: int, what: str) -> torch.Tensor:
    if bool(((index < -size) | (index >= size)).any()):
        raise ParameterError(f"{what} position out of range for an attention tensor with {size} {what} positions")
    return index % size


@contextlib.contextmanager
def scale_attention(lm, entries: Iterable[tuple[int, int, int, int]], alpha: float,
                    renormalize: bool = False) -> Iterator[None]:
    """Multiply attention probabilities ``P[layer][:, head, query_pos, key_pos] *= alpha`` for every entry
    ``(layer, head, query_pos, key_pos)``; negative positions count from the end (query -1 = last position).

    alpha 0 = suppress, 2 = enhance. Rows are NOT renormalised by default (the scaled row no longer sums to 1).
    ``renormalize=True`` rescales every touched row so that it keeps its original sum:
    ``P'[q] = P_scaled[q] * sum(P[q]) / sum(P_scaled[q])`` (rows whose scaled sum is 0 stay 0).
    alpha = 1 is an exact no-op either way (logits bit-identical to no hook).
    """
    by_layer: dict[int, set] = defaultdict(set)
    for layer, head, q, k in entries:
        (layer,) = _check_layers(lm, [layer])
        by_layer[layer].add((int(head), int(q), int(k)))

    def make(triples):
        idx = torch.tensor(sorted(triples), dtype=torch.long)

        def fn(p):
            heads = _resolve(idx[:, 0], p.shape[1], "head").to(p.device)
            qs = _resolve(idx[:, 1], p.shape[2], "query").to(p.device)
            ks = _resolve(idx[:, 2], p.shape[3], "key").to(p.device)
            out = p.clone()
            out[:, heads, qs, ks] = p[:, heads, qs, ks] * alpha
            if renormalize:
                rows = torch.unique(torch.stack([heads, qs], 1), dim=0)
                h, q = rows[:, 0], rows[:, 1]
                before, after = p[:, h, q].sum(-1, keepdim=True), out[:, h, q].sum(-1, keepdim=True)
                factor = torch.where(after > 0, before / torch.where(after > 0, after, 1), 0)
                out[:, h, q] = out[:, h, q] * factor
            return out

        return fn

    with attention_hooks(lm, {layer: make(t) for layer, t in by_layer.items()}):
        yield


def replace_last_row(x: torch.Tensor, first_row: int = 0) -> ProbsFn:
    """Hook putting ``x [n, heads, T]`` into the last query row of ``P`` for batch rows ``first_row:``. When ``P``
    has fewer keys than ``T`` (a sliding-window cache keeps only the last ones) its keys are the last of ``x``."""

    def fn(p):
        out = p.clone()
        out[first_row:, :, -1, :] = x[..., x.shape[-1] - p.shape[-1]:].to(p.dtype)
        return out

    return fn


# ------------------------------------------------------------------------------------ synapse sets


def random_non_synapses(scores_shape, synapses: Iterable[tuple[int, int, int]], n: int,
                        seed: int = 0) -> set[tuple[int, int, int]]:
    """``n`` distinct random ``(layer, head, key_pos)`` entries of a ``[L, H, T]`` score tensor that are not in
    ``synapses`` (the control set); the same arguments give the same set."""
    L, H, T = (int(s) for s in scores_shape)
    excluded = {tuple(int(v) for v in s) for s in synapses}
    pool = [(l, h, k) for l in range(L) for h in range(H) for k in range(T) if (l, h, k) not in excluded]
    if not 0 <= n <= len(pool):
        raise ParameterError(f"cannot draw {n} non-synapse entries: only {len(pool)} exist")
    return set(random.Random(seed).sample(pool, n))


def synapse_entries(synapses: Iterable[tuple[int, int, int]], query_pos: int = -1) -> list[tuple[int, int, int, int]]:
    """``(layer, head, key_pos)`` synapses -> ``(layer, head, query_pos, key_pos)`` entries for :func:`scale_attention`."""
    return [(l, h, query_pos, k) for l, h, k in sorted(synapses)]
