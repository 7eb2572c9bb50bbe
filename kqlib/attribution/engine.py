"""The one staircase engine: integrated gradients of p(target) over a per-layer quantity at the last position.

A *path* (:class:`NeuronPath` for MLP neurons at a site, :class:`AttentionRowPath` for the answer position's
attention row) says what is interpolated at layer l: ``x = b_l + alpha (a_l - b_l)``. The engine returns

    G_l = sum_k w_k  dp/dx |_{x = b_l + alpha_k (a_l - b_l)}          ([L, *feature_shape], float64)

for nodes/weights ``(alpha_k, w_k)`` of a quadrature rule (:mod:`.quadrature`); the score is ``(a_l - b_l) G_l``.

Why it is exact and fast. Changing layer l's quantity at the last position changes nothing at earlier
positions or in lower layers. One base pass over the prompt records the prefix keys/values, each layer's
call arguments (masks, rotary embeddings, sliding windows: whatever the model passed) and the residual
``h_l`` entering each layer at the last position. A path point then recomputes only the last position, only
through layers >= l, and only the target probability (fused head, :mod:`.head`). Path points of all layers
share one batch, a *staircase*: rows whose path starts at layer j join the batch there. Each chunk of rows is
one autograd graph; chunks are packed under a memory budget that counts the layers a row traverses and the
prompt length (each row sees its own copy of the prefix keys/values).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from kqlib.core.attention import attention_hooks, capture_attention, replace_last_row
from kqlib.core.hooks import capture, site_hooks
from kqlib.attribution.head import VOCAB_CHUNK, target_probability

DEFAULT_BUDGET_CPU = 512 << 20
DEFAULT_BUDGET_CUDA = 8 << 30
PREFILL_CHUNK = 256  # prompt tokens per prefix pass of the base pass


# ------------------------------------------------------------------------------------------ base pass


class _ReplayCache:
    """Stands in for a decoder layer's KV cache: the recorded prefix keys/values (shared by every row,
    broadcast to the batch) followed by the new rows' own keys/values."""

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.prefix = prefix

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.prefix[layer_idx]
        if pk.shape[-2] == 0:
            return key, value
        n = key.shape[0]
        return (torch.cat([pk.expand(n, *pk.shape[1:]), key], dim=-2),
                torch.cat([pv.expand(n, *pv.shape[1:]), value], dim=-2))


@dataclass
class BasePass:
    layer_calls: list  # per layer: (args, kwargs) the model passed, with the cache object replaced
    layer_inputs: list  # per layer: hidden state entering it at the last position, [1, 1, d]
    prob: float  # p(target) of the unmodified model
    n_tokens: int


@torch.no_grad()
def base_pass(lm, ids: torch.Tensor, target: int, prefill_chunk: int | None = None) -> BasePass:
    """One pass over the prompt (prefix with a cache, in chunks of ``prefill_chunk`` tokens, default
    :data:`PREFILL_CHUNK`; then the last token), recording what the staircase needs."""
    from transformers import DynamicCache  # heavy: transformers, not imported by `import kqlib`

    prefill_chunk = PREFILL_CHUNK if prefill_chunk is None else int(prefill_chunk)

    # A plain DynamicCache keeps every prefix key/value even for sliding-window layers: the model then masks
    # the window itself, exactly as in a full forward pass (a sliding cache differs from it by ~1e-7).
    cache = DynamicCache()
    # the prefix in chunks of PREFILL_CHUNK tokens: eager attention then holds [heads, chunk, T] scores, not
    # [heads, T, T] (about 0.55 GB at 2,800 tokens on SmolLM2); the cache makes it the same computation
    n_prefix = ids.shape[1] - 1
    for start in range(0, n_prefix, prefill_chunk):
        lm.model(ids[:, start:min(n_prefix, start + prefill_chunk)], cache=cache, use_cache=True, logits_to_keep=1)
    recorded: dict[int, tuple] = {}
    original_update = cache.update

    def recording_update(key, value, layer_idx, *args, **kwargs):
        k, v = original_update(key, value, layer_idx, *args, **kwargs)
        recorded[layer_idx] = (k[..., :-1, :], v[..., :-1, :])  # everything but the new token
        return k, v

    cache.update = recording_update
    replay = _ReplayCache(recorded)
    calls: list = [None] * lm.n_layers
    inputs: list = [None] * lm.n_layers

    def make_pre(i):
        def pre(_mod, args, kwargs):
            hs = args[0] if args else kwargs["hidden_states"]
            inputs[i] = hs.detach()
            swap = lambda v: replay if v is cache else v  # noqa: E731
            calls[i] = (tuple(swap(v) for v in args[1:]),
                        {k: swap(v) for k, v in kwargs.items() if k != "hidden_states"})

        return pre

    handles = [lm.layer(i).register_forward_pre_hook(make_pre(i), with_kwargs=True) for i in range(lm.n_layers)]
    try:
        out = lm.model(ids[:, -1:], cache=cache, use_cache=True, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    prob = torch.softmax(out.logits[0, -1].float(), -1)[target].item()
    return BasePass(calls, inputs, prob, int(ids.shape[1]))


def _run_layer(lm, i: int, hidden: torch.Tensor, base: BasePass) -> torch.Tensor:
    args, kwargs = base.layer_calls[i]
    out = lm.layer(i)(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


# ---------------------------------------------------------------------------------------------- paths


class NeuronPath:
    """Interpolate layer l's neuron vector at ``site`` (last position); with ``clamp_others`` (SIG) every other
    layer's neuron vector is held at its actual value ``a``. ``values``/``baseline``: ``[L, N]``."""

    def __init__(self, lm, site: str, clamp_others: bool = False):
        self.lm, self.site, self.clamp_others = lm, site, clamp_others
        self.values = None
        self.baseline = None

    @property
    def scale_invariant(self) -> bool:
        """The path starts at 0 in a model whose layer outputs are normalised (:attr:`LM.normalized_outputs`):
        the integrand falls like 1/alpha above a tiny alpha, so the adaptive rule works in log(alpha)."""
        return self.lm.normalized_outputs and (self.baseline is None or not bool(self.baseline.any()))

    @contextlib.contextmanager
    def recording(self):
        """Context for the base pass: records ``a`` (the neuron vectors at the last position)."""
        with capture(self.lm, self.site) as acts:
            yield
        self.values = torch.stack([acts[l][0] for l in range(self.lm.n_layers)])

    def patch(self, layer: int, x: torch.Tensor | None, n_prev: int):
        """While layer ``layer`` runs: rows ``n_prev:`` get ``x`` (new path rows), rows ``:n_prev`` get ``a``
        (SIG) or pass unchanged."""
        a = self.values[layer]
        if x is None and not self.clamp_others:
            return contextlib.nullcontext()

        def fn(v):
            out = v.clone()
            if x is not None:
                out[n_prev:, -1] = x
            if self.clamp_others and n_prev:
                out[:n_prev, -1] = a
            return out

        return site_hooks(self.lm, {layer: fn}, self.site)


class AttentionRowPath:
    """Interpolate layer l's attention probabilities of the last query position (``[heads, T]``) from 0.
    Every layer runs through kqlib's eager attention function, as in the reference."""

    def __init__(self, lm):
        self.lm = lm
        self.values = None
        self.baseline = None

    @property
    def scale_invariant(self) -> bool:
        """As :attr:`NeuronPath.scale_invariant` (the attention row is scaled from 0, and its layer's attention
        output is normalised in Gemma2/3)."""
        return self.lm.normalized_outputs

    @contextlib.contextmanager
    def recording(self):
        with capture_attention(self.lm) as probs:  # the base pass runs under kq_eager: its masks match
            yield
        rows = [probs[l][0, :, -1, :] for l in range(self.lm.n_layers)]
        n_tokens = max(r.shape[-1] for r in rows)
        self.values = torch.stack([_full_row(r, n_tokens) for r in rows])  # [L, H, T]

    def patch(self, layer: int, x: torch.Tensor | None, n_prev: int):
        return attention_hooks(self.lm, {} if x is None else {layer: replace_last_row(x, n_prev)})


def _full_row(row: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """``[H, K]`` last-token attention row over the last ``K`` keys (sliding-window cache) -> ``[H, T]``; keys
    outside the window have probability exactly 0 (the eager mask), so zeros are the true values."""
    full = row.new_zeros(row.shape[0], n_tokens)
    full[:, n_tokens - row.shape[1]:] = row
    return full


# ------------------------------------------------------------------------------------------- the engine


def row_bytes_per_layer(lm, n_tokens: int) -> int:
    """Estimated autograd memory of one path row through one decoder layer (saved activations, plus the row's
    copy of the prefix keys/values and its attention scores), plus the path leaf itself."""
    cfg = lm.model.config.get_text_config() if hasattr(lm.model.config, "get_text_config") else lm.model.config
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 1024)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 8)
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    width = torch.finfo(lm.dtype).bits // 8
    per_token = 6 * heads * head_dim + 4 * heads  # K, V (+ GQA-expanded copies), scores, probabilities
    return width * (16 * d + 6 * lm.n_neurons + per_token * n_tokens)


def pack_chunks(rows: list[tuple[int, int]], n_layers: int, per_row_layer: int, fixed_per_row: int,
                budget: int) -> list[list[tuple[int, int]]]:
    """Greedy packing of ``rows`` (sorted by start layer) into chunks whose estimated memory
    ``sum_rows ((n_layers - start) * per_row_layer + fixed_per_row)`` stays within ``budget`` (>= 1 row each)."""
    chunks, current, used = [], [], 0
    for row in rows:
        cost = (n_layers - row[0]) * per_row_layer + fixed_per_row
        if current and used + cost > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(row)
        used += cost
    if current:
        chunks.append(current)
    return chunks


def _per_layer(n_layers: int, values) -> list[torch.Tensor]:
    """One 1-D float64 tensor per layer: ``values`` is one tensor (the same nodes at every layer) or a list."""
    if torch.is_tensor(values):
        return [values] * n_layers
    if len(values) != n_layers:
        raise ValueError(f"per-layer nodes: expected {n_layers} lists, got {len(values)}")
    return [torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in values]


def _chunks(lm, base, rows, batch_size, memory_budget):
    if batch_size is not None:
        return [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
    if memory_budget is None:
        memory_budget = DEFAULT_BUDGET_CUDA if lm.device.type == "cuda" else DEFAULT_BUDGET_CPU
    fixed = 3 * 4 * VOCAB_CHUNK
    return pack_chunks(rows, lm.n_layers, row_bytes_per_layer(lm, base.n_tokens), fixed, memory_budget)


def run_rows(lm, base: BasePass, path, alphas, weights, target: int, sink, *, grad: bool = True,
             batch_size: int | None = None, memory_budget: int | None = None) -> None:
    """Evaluate path rows in staircase chunks: rows of layer l at its nodes ``alphas[l]`` (a list of per-layer
    1-D tensors, or one tensor for every layer; layers may differ in number and place of nodes, or have none).
    For each chunk and layer, calls ``sink(layer, ks, g, p)``: ``ks`` the node indices, ``g [len(ks), *feature]``
    the weighted gradients ``w_k dp/dx`` (None when ``grad`` is False: a forward-only pass), ``p [len(ks)]`` the
    target probabilities at those nodes."""
    alphas = _per_layer(lm.n_layers, alphas)
    weights = _per_layer(lm.n_layers, weights)
    rows = [(layer, k) for layer in range(lm.n_layers) for k in range(len(alphas[layer]))]
    if not rows:
        return
    for part in _chunks(lm, base, rows, batch_size, memory_budget):
        _staircase(lm, base, path, part, alphas, weights, target, sink, grad)


def integrate(lm, base: BasePass, path, alphas, weights, target: int, *,
              batch_size: int | None = None, memory_budget: int | None = None) -> torch.Tensor:
    """``G [L, *feature_shape]`` float64 (see the module docstring). ``alphas``/``weights``: one tensor of nodes
    for every layer, or per-layer lists (:func:`run_rows`). ``batch_size``: path rows per chunk (fixed); else
    chunks are packed under ``memory_budget`` bytes (default 512 MiB on CPU, 8 GiB on CUDA)."""
    a = path.values
    grad_sum = torch.zeros(a.shape, dtype=torch.float64, device=a.device)

    def add(layer, ks, g, p):
        grad_sum[layer] += g.double().sum(0)

    run_rows(lm, base, path, alphas, weights, target, add, batch_size=batch_size, memory_budget=memory_budget)
    return grad_sum


def _staircase(lm, base, path, part, alphas, weights, target, sink, grad: bool = True) -> None:
    """Rows ``part`` = [(layer, node)] sorted by layer: rows starting at layer j join the batch there and continue
    through j+1, ...; hands each layer's ``w_k dp/dx`` and ``p`` to ``sink``."""
    a, b = path.values, path.baseline
    b = torch.zeros_like(a) if b is None else b
    by_layer: dict[int, list[int]] = {}
    for layer, k in part:
        by_layer.setdefault(layer, []).append(k)
    leaves: dict[int, torch.Tensor] = {}
    hidden = None
    view = (-1,) + (1,) * (a.dim() - 1)
    with torch.enable_grad() if grad else torch.no_grad():
        for i in range(min(by_layer), lm.n_layers):
            n_prev = 0 if hidden is None else hidden.shape[0]
            x = None
            if i in by_layer:
                ks = by_layer[i]
                node = alphas[i].to(a.device, a.dtype)[torch.tensor(ks, device=a.device)].view(view)
                x = (b[i] + node * (a[i] - b[i])).detach().requires_grad_(grad)
                leaves[i] = x
                h_new = base.layer_inputs[i].expand(len(ks), *base.layer_inputs[i].shape[1:])
                hidden = h_new if hidden is None else torch.cat([hidden, h_new], 0)
            with path.patch(i, x, n_prev):
                hidden = _run_layer(lm, i, hidden, base)
        p = target_probability(lm, hidden[:, -1], target)
        layers = sorted(leaves)
        if grad:
            w = torch.cat([weights[l][torch.tensor(by_layer[l])] for l in layers]).to(p.device, p.dtype)
            grads = torch.autograd.grad((p * w).sum(), [leaves[l] for l in layers])
        else:
            grads = [None] * len(layers)
    p = p.detach().double()
    start = 0
    for l, g in zip(layers, grads):
        n = len(by_layer[l])
        sink(l, by_layer[l], g, p[start:start + n])
        start += n
