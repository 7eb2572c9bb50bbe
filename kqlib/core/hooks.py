"""The one hook primitive, :func:`site_hooks`, for every site kind, and the neuron helpers built on it.

Sites: ``"post"`` / ``"pre"`` (MLP neuron activations, :mod:`kqlib.core.architectures` says which module) and
``"attention"`` (attention probabilities ``P [batch, heads, q, k]``; the entry-level helpers, ``scale_attention``
and ``capture_attention``, are in :mod:`kqlib.core.attention`). :func:`capture` records any site.

Every hook is registered inside a ``with`` block and removed when it exits, also after an exception.
A site function sees the neuron vectors as ``[batch, seq, n_neurons]`` whatever the family's layout
(OPT flattens tokens; the view is restored before the model continues) and returns a replacement tensor
or ``None`` (leave unchanged).

    with kqlib.core.hooks.capture(lm) as acts:          # acts[layer] -> [batch, n_neurons] at the last position
        lm.model(ids)
    with kqlib.core.hooks.scale_neurons(lm, [(3, 17), (5, 2)], factor=0.0):   # suppress two neurons
        lm.model(ids)
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict
from typing import Callable, Iterable, Iterator

import torch

from kqlib.core.architectures import get_module
from kqlib.errors import ParameterError, UnsupportedArchitectureError

SiteFn = Callable[[torch.Tensor], "torch.Tensor | None"]

KQ_ATTENTION = "kq_eager"

#: attention module -> the hooks active on it, applied in registration order (nested contexts compose)
_ACTIVE: dict[torch.nn.Module, list[SiteFn]] = {}


@contextlib.contextmanager
def site_hooks(lm, fns: dict[int, SiteFn], site: str = "post") -> Iterator[None]:
    """The one hook primitive: run ``fns[layer](x)`` on the tensor ``x`` of each listed layer's ``site`` and
    let a returned tensor replace it (``None``: unchanged).

    ``site="post"`` / ``"pre"``: ``x`` is the neuron vectors ``[batch, seq, n]`` (module hooks);
    ``site="attention"``: ``x`` is the attention probabilities ``P [batch, heads, q, k]`` (the ``kq_eager``
    attention function or the family's probabilities module, see :mod:`kqlib.core.attention`)."""
    if site == "attention":
        with _attention_probs_hooks(lm, fns):
            yield
        return
    handles = []
    try:
        for layer, fn in fns.items():
            module, kind = lm.site_module(layer, site)
            handles.extend(_register(lm, layer, module, kind, fn))
        yield
    finally:
        for h in handles:
            h.remove()


def _register(lm, layer: int, module, kind: str, fn: SiteFn) -> list:
    shape: dict = {}
    handles = []
    if lm.family.tokens_flattened:  # remember [batch, seq] from the decoder layer's input
        def remember(_mod, args, kwargs):
            hs = args[0] if args else kwargs["hidden_states"]
            shape["bs"] = hs.shape[:2]

        handles.append(lm.layer(layer).register_forward_pre_hook(remember, with_kwargs=True))

    def apply(x: torch.Tensor) -> torch.Tensor | None:
        if x.dim() == 2:  # [batch*seq, n] -> [batch, seq, n]
            out = fn(x.view(*shape["bs"], x.shape[-1]))
            return None if out is None else out.reshape(x.shape)
        return fn(x)

    if kind == "input":
        def pre_hook(_mod, args):
            out = apply(args[0])
            return None if out is None else (out, *args[1:])

        handles.append(module.register_forward_pre_hook(pre_hook))
    else:
        def post_hook(_mod, _args, output):
            return apply(output)

        handles.append(module.register_forward_hook(post_hook))
    return handles


@contextlib.contextmanager
def capture(lm, site: str = "post", layers: Iterable[int] | None = None, position: int | None = -1,
            detach: bool = True) -> Iterator[dict]:
    """Record a site: neuron activations ``acts[layer]`` ``[batch, n]`` at ``position`` (``[batch, seq, n]`` when
    ``position`` is None); for ``site="attention"`` the probabilities ``[batch, heads, k]`` of query row
    ``position`` (``[batch, heads, q, k]`` when None)."""
    acts: dict[int, torch.Tensor] = {}
    layers = range(lm.n_layers) if layers is None else layers

    def make(layer):
        def fn(x):
            v = x if position is None else (x[:, :, position] if site == "attention" else x[:, position])
            acts[layer] = v.detach().clone() if detach else v
            return None

        return fn

    with site_hooks(lm, {l: make(l) for l in layers}, site):
        yield acts


def _group(neurons: Iterable[tuple[int, int]]) -> dict[int, torch.Tensor]:
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, idx in neurons:
        by_layer[int(layer)].append(int(idx))
    return {l: torch.tensor(sorted(set(v)), dtype=torch.long) for l, v in by_layer.items()}


@contextlib.contextmanager
def scale_neurons(lm, neurons: Iterable[tuple[int, int]], factor: float, site: str = "post",
                  position: int | None = -1) -> Iterator[None]:
    """Multiply the activations of ``neurons`` ((layer, index) pairs) by ``factor`` at ``position``
    (``None`` = every position). factor 0 = suppress, 2 = enhance (Dai et al. 2022); factor 1 is an exact
    no-op (the logits stay bit-identical)."""
    groups = _group(neurons)

    def make(idx):
        def fn(x):
            out = x.clone()
            sel = out[:, :, idx] if position is None else out[:, position, idx]
            new = sel * factor
            if position is None:
                out[:, :, idx] = new
            else:
                out[:, position, idx] = new
            return out

        return fn

    with site_hooks(lm, {l: make(i.to(lm.device)) for l, i in groups.items()}, site):
        yield


@contextlib.contextmanager
def set_neurons(lm, layer: int, values: torch.Tensor, site: str = "post", position: int = -1,
                rows: slice | None = None) -> Iterator[None]:
    """Replace layer ``layer``'s whole neuron vector at ``position`` by ``values`` (``[n]`` or ``[batch, n]``).
    ``rows`` restricts the replacement to some batch rows. The replacement is differentiable."""

    def fn(x):
        out = x.clone()
        r = slice(None) if rows is None else rows
        out[r, position] = values.to(x.dtype)
        return out

    with site_hooks(lm, {layer: fn}, site):
        yield


# --------------------------------------------------------------- the attention-probabilities mechanism


def _family_eager(module) -> Callable:
    """The eager attention function the module's own modeling file defines (what ``"eager"`` would run)."""
    if getattr(module, "reorder_and_upcast_attn", False):  # GPT-2 option: eager takes the module's own path
        return lambda m, q, k, v, mask, **kw: m._upcast_and_reordered_attn(q, k, v, mask)
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise UnsupportedArchitectureError(
            f"{type(module).__name__} calls the attention interface but its modeling file defines no "
            "eager_attention_forward; kqlib cannot reach its attention probabilities."
        )
    return fn


def _repeat_heads(value: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[b, kv_heads, k, d]`` -> ``[b, n_heads, k, d]`` (grouped-query attention: each kv head serves a group)."""
    b, kv, k, d = value.shape
    if kv == n_heads:
        return value
    return value[:, :, None].expand(b, kv, n_heads // kv, k, d).reshape(b, n_heads, k, d)


def _kq_attention(module, query, key, value, attention_mask, **kwargs):
    """Eager attention of the module's family, then the active hooks on its probabilities ``P``."""
    out, probs = _family_eager(module)(module, query, key, value, attention_mask, **kwargs)
    changed = False
    for fn in _ACTIVE.get(module, ()):
        new = fn(probs)
        if new is not None:
            probs, changed = new, True
    if changed:
        v = _repeat_heads(value, probs.shape[1])
        out = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).contiguous()
    return out, probs


_registered = False


def _register_kq_attention() -> None:
    global _registered
    if _registered:
        return
    # heavy: transformers, imported only when a model first runs kqlib's attention
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(KQ_ATTENTION, _kq_attention)
    AttentionMaskInterface.register(KQ_ATTENTION, eager_mask)  # without it no causal mask is built, silently
    _registered = True


def check_layers(lm, layers: Iterable[int]) -> list[int]:
    out = []
    for layer in layers:
        if not -lm.n_layers <= int(layer) < lm.n_layers:
            raise ParameterError(f"layer {layer} out of range for a model with {lm.n_layers} layers")
        out.append(int(layer) % lm.n_layers)
    return out


@contextlib.contextmanager
def _attention_probs_hooks(lm, fns: dict[int, SiteFn]) -> Iterator[None]:
    """Run ``fns[layer](P)`` on the attention probabilities ``P [batch, heads, q, k]`` of each listed layer;
    a returned tensor replaces ``P`` (it may carry gradients), ``None`` leaves it unchanged."""
    layers = check_layers(lm, fns)
    module_path = lm.family.attention_probs_module or None
    handles: list = []
    added: list[tuple[torch.nn.Module, SiteFn]] = []
    config = lm.model.config
    previous = config._attn_implementation
    try:
        if module_path is None:
            _register_kq_attention()
            config._attn_implementation = KQ_ATTENTION
            for layer, fn in zip(layers, fns.values()):
                module = lm.attention_module(layer)
                _ACTIVE.setdefault(module, []).append(fn)
                added.append((module, fn))
        else:
            for layer, fn in zip(layers, fns.values()):
                site = get_module(lm.attention_module(layer), module_path)
                handles.append(site.register_forward_hook(lambda _m, _a, out, fn=fn: fn(out)))
        yield
    finally:
        for h in handles:
            h.remove()
        for module, fn in reversed(added):
            active = _ACTIVE[module]
            active.remove(fn)
            if not active:
                del _ACTIVE[module]
        if module_path is None:
            config._attn_implementation = previous
