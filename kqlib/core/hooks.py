"""Context-managed hooks on neuron sites: capture, replace and scale MLP neuron activations.

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
from collections import defaultdict
from typing import Callable, Iterable, Iterator

import torch

SiteFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def site_hooks(lm, fns: dict[int, SiteFn], site: str = "post") -> Iterator[None]:
    """Run ``fns[layer](acts)`` on the neuron vectors ``acts [batch, seq, n]`` of each listed layer."""
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
    """Record neuron activations: ``acts[layer]`` is ``[batch, n]`` at ``position`` (or ``[batch, seq, n]``
    when ``position`` is None)."""
    acts: dict[int, torch.Tensor] = {}
    layers = range(lm.n_layers) if layers is None else layers

    def make(layer):
        def fn(x):
            v = x if position is None else x[:, position]
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
