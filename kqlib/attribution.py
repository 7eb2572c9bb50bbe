"""Knowledge-neuron attribution by integrated gradients over MLP neurons: exact and fast.

For a query (prompt, target token t) let ``a_l`` be layer l's neuron vector at the last prompt position
(``[n_neurons]``), ``b_l`` a baseline vector and ``p(x)`` the probability of t when ``a_l`` is replaced by
``x``. With ``alpha_k = linspace(0, 1, steps)`` (both ends included, as in EleutherAI's knowledge-neurons):

    score_l = (a_l - b_l) * mean_k  dp/dx |_{x = b_l + alpha_k (a_l - b_l)}          ([n_neurons] per layer)

* ``ig``   (Dai et al. 2022): b_l = 0, so score_l = a_l * mean_k grad p(alpha_k a_l).
* ``amig`` (Chen et al. 2024): b_l = mean activation over a reference set (:func:`amig_baseline`).
* ``sig``  (Enguehard et al. 2023, adapted to neurons; our reading, documented here): SIG interpolates one
  input feature while every other feature keeps its actual value. Here the features are the layers' neuron
  vectors at the answer position: layer l is interpolated from 0 to a_l while every *other* layer's neuron
  vector is held at its original value (downstream MLPs cannot react), so SIG measures the part of a layer's
  effect that does not pass through later MLP neurons. With one layer SIG == IG.

Exactness of the fast path. Scaling the last position at layer l changes nothing at earlier positions or in
lower layers. So the prefix keys/values and the residual ``h_l`` entering layer l are computed once (one
pass over the prompt); each path point then recomputes only the last position through layers >= l, and only
its logits. Path points of all layers are batched in a "staircase": rows that start at layer j join the batch
there and continue through j+1, ... . Each decoder layer is called with the very arguments the model itself
passed it (captured by a pre-hook: masks, rotary embeddings, sliding windows), and a replay cache returns the
recorded prefix keys/values, so every family in :mod:`kqlib.sites` is handled by the same code.
:func:`attribute_reference` is the plain full-recompute implementation the tests compare against.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .errors import ParameterError
from .hooks import capture, site_hooks

METHODS = ("ig", "amig", "sig")

# AMIG's reference sentence (Chen et al. 2024 use the mean activation over its tokens as one baseline).
AMIG_REFERENCE = "The sky is yellow. Apples grow under the ground. Birds live in the sea."


def _check(method: str, steps: int, site: str) -> None:
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or steps < 2:
        raise ParameterError(f"steps must be an integer >= 2 (the path has both ends), got {steps!r}")
    if site not in ("post", "pre"):
        raise ParameterError(f"site must be 'post' or 'pre', got {site!r}")


def target_token(lm, prompt: str, target) -> int:
    """The target token id: an int is taken as is; a string is the answer's first token after the prompt."""
    if isinstance(target, (int,)) or (torch.is_tensor(target) and target.numel() == 1):
        return int(target)
    ids = lm.answer_token_ids(prompt, str(target))
    if not ids:
        raise ParameterError(f"answer {target!r} encodes to no token after {prompt!r}")
    return ids[0]


@torch.no_grad()
def amig_baseline(lm, prompts: list[str] | None = None, site: str = "post", position: int | None = None):
    """AMIG baseline ``[n_layers, n_neurons]``: the mean neuron vector over reference prompts.

    Default: every token position of :data:`AMIG_REFERENCE`. With ``position=-1``: the answer position of
    each prompt (e.g. a sample of ParaRel queries). Cached on the LM per (prompts, site, position).
    """
    prompts = [AMIG_REFERENCE] if prompts is None else list(prompts)
    key = (tuple(prompts), site, position, lm.fingerprint)
    store = lm.__dict__.setdefault("_amig_baselines", {})
    if key not in store:
        total, count = None, 0
        for prompt in prompts:
            with capture(lm, site, position=position) as acts:
                lm.model(lm.encode(prompt), use_cache=False, logits_to_keep=1)
            a = torch.stack([acts[l][0] for l in range(lm.n_layers)])  # [L, N] or [L, T, N]
            if a.dim() == 3:
                count += a.shape[1]
                a = a.sum(1)
            else:
                count += 1
            total = a.double() if total is None else total + a.double()
        store[key] = (total / count).to(lm.dtype)
    return store[key]


def _baseline_for(lm, method, baseline, site):
    if method == "amig":
        return amig_baseline(lm, site=site) if baseline is None else baseline.to(lm.device, lm.dtype)
    if baseline is not None:
        raise ParameterError(f"a baseline is only used by method='amig', not {method!r}")
    return None


# ---------------------------------------------------------------------------------------- reference


def attribute_reference(lm, prompt: str, target, *, method: str = "ig", steps: int = 20, site: str = "post",
                        baseline: torch.Tensor | None = None) -> torch.Tensor:
    """Plain implementation: for every layer and path point, rerun the whole prompt. ``[L, N]`` float32."""
    _check(method, steps, site)
    t = target_token(lm, prompt, target)
    ids = lm.encode(prompt)
    with torch.no_grad(), capture(lm, site) as acts:
        lm.model(ids, use_cache=False)
    a = torch.stack([acts[l][0] for l in range(lm.n_layers)])
    b = _baseline_for(lm, method, baseline, site)
    b = torch.zeros_like(a) if b is None else b
    alphas = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype)
    scores = torch.zeros(lm.n_layers, lm.n_neurons, dtype=_result_dtype(lm))
    for layer in range(lm.n_layers):
        x = (b[layer] + alphas[:, None] * (a[layer] - b[layer])).detach().requires_grad_(True)

        def replace(v, x=x):
            out = v.clone()
            out[:, -1] = x
            return out

        fns = {layer: replace}
        if method == "sig":
            for other in range(lm.n_layers):
                if other != layer:
                    fns[other] = lambda v, o=other: _clamp_last(v, a[o])
        with torch.enable_grad(), site_hooks(lm, fns, site):
            logits = lm.model(ids.expand(steps, -1), use_cache=False, logits_to_keep=1).logits[:, -1]
            p = torch.softmax(logits.float(), -1)[:, t]
            (g,) = torch.autograd.grad(p.sum(), x)
        scores[layer] = ((a[layer] - b[layer]) * g.mean(0)).to(scores.dtype).cpu()
    return scores


def _result_dtype(lm) -> torch.dtype:
    """Scores are float32, or float64 for a float64 model (exactness checks)."""
    return torch.float64 if lm.dtype == torch.float64 else torch.float32


def _clamp_last(v: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    out = v.clone()
    out[:, -1] = value
    return out


# --------------------------------------------------------------------------------------------- fast


class _ReplayCache:
    """Stands in for the KV cache of a decoder layer: returns the recorded prefix keys/values followed by
    the new rows' own keys/values (the prefix is shared by every row, broadcast to the batch)."""

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
class _BasePass:
    layer_calls: list  # per layer: (args, kwargs) the model passed, with the cache object replaced
    layer_inputs: list  # per layer: hidden state entering it at the last position, [1, 1, d]
    acts: torch.Tensor  # [L, N] neuron vectors at the last position
    prob: float


@torch.no_grad()
def _base_pass(lm, ids: torch.Tensor, target: int, site: str) -> _BasePass:
    from transformers import DynamicCache

    # A plain DynamicCache keeps every prefix key/value even for sliding-window layers: the model then masks
    # the window itself, exactly as in a full forward pass (a sliding cache differs from it by ~1e-7).
    cache = DynamicCache()
    if ids.shape[1] > 1:
        lm.model(ids[:, :-1], cache=cache, use_cache=True, logits_to_keep=1)
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
            calls[i] = (tuple(swap(v) for v in args[1:]), {k: swap(v) for k, v in kwargs.items() if k != "hidden_states"})

        return pre

    handles = [lm.layer(i).register_forward_pre_hook(make_pre(i), with_kwargs=True) for i in range(lm.n_layers)]
    try:
        with capture(lm, site) as acts:
            out = lm.model(ids[:, -1:], cache=cache, use_cache=True, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    prob = torch.softmax(out.logits[0, -1].float(), -1)[target].item()
    a = torch.stack([acts[l][0] for l in range(lm.n_layers)])
    return _BasePass(calls, inputs, a, prob)


def _run_layer(lm, i: int, hidden: torch.Tensor, base: _BasePass) -> torch.Tensor:
    args, kwargs = base.layer_calls[i]
    out = lm.layer(i)(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def default_batch_size(lm, steps: int) -> int:
    """Path points per chunk, so that one chunk's activations stay within ~256 MiB (CPU) / 4 GiB (CUDA)."""
    cfg = lm.model.config.get_text_config() if hasattr(lm.model.config, "get_text_config") else lm.model.config
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 1024)
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    bytes_per_row = 4 * (3 * vocab + lm.n_layers * (16 * d + 6 * lm.n_neurons))
    budget = (4 << 30) if lm.device.type == "cuda" else (256 << 20)
    return int(max(1, min(lm.n_layers * steps, budget // bytes_per_row)))


def attribute(lm, prompt: str, target, *, method: str = "ig", steps: int = 20, site: str = "post",
              batch_size: int | None = None, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """Attribution scores ``[n_layers, n_neurons]`` (float32, CPU) of the neurons at the last prompt position
    for ``p(target | prompt)``; see the module docstring for the formula of each ``method``.

    ``target``: the answer string (its first token after the prompt is used) or a token id.
    ``batch_size``: path points per chunk (memory bound; no autograd graph outlives its chunk).
    """
    _check(method, steps, site)
    t = target_token(lm, prompt, target)
    ids = lm.encode(prompt)
    base = _base_pass(lm, ids, t, site)
    a = base.acts
    b = _baseline_for(lm, method, baseline, site)
    b = torch.zeros_like(a) if b is None else b
    alphas = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype)
    rows = [(layer, k) for layer in range(lm.n_layers) for k in range(steps)]
    chunk = batch_size or default_batch_size(lm, steps)
    grad_sum = torch.zeros(lm.n_layers, lm.n_neurons, dtype=torch.float64, device=a.device)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        _staircase(lm, base, part, alphas, a, b, t, site, method == "sig", grad_sum)
    scores = (a - b).double() * grad_sum / steps
    return scores.to(_result_dtype(lm)).cpu()


def _staircase(lm, base, part, alphas, a, b, target, site, clamp_others, grad_sum) -> None:
    """Rows ``part`` = [(layer, step)] sorted by layer; accumulates sum_k dp/dx into ``grad_sum[layer]``."""
    by_layer: dict[int, list[int]] = {}
    for layer, k in part:
        by_layer.setdefault(layer, []).append(k)
    first = min(by_layer)
    leaves: dict[int, torch.Tensor] = {}
    hidden = None
    with torch.enable_grad():
        for i in range(first, lm.n_layers):
            n_prev = 0 if hidden is None else hidden.shape[0]
            fn = None
            if i in by_layer:
                ks = torch.tensor(by_layer[i], device=a.device)
                x = (b[i] + alphas[ks, None] * (a[i] - b[i])).detach().requires_grad_(True)
                leaves[i] = x
                h_new = base.layer_inputs[i].expand(len(ks), *base.layer_inputs[i].shape[1:])
                hidden = h_new if hidden is None else torch.cat([hidden, h_new], 0)

                def fn(v, x=x, n_prev=n_prev, i=i):
                    out = v.clone()
                    out[n_prev:, -1] = x
                    if clamp_others and n_prev:
                        out[:n_prev, -1] = a[i]
                    return out
            elif clamp_others:
                def fn(v, i=i):
                    return _clamp_last(v, a[i])
            ctx = site_hooks(lm, {i: fn}, site) if fn is not None else contextlib.nullcontext()
            with ctx:
                hidden = _run_layer(lm, i, hidden, base)
        logits = lm.head_logits(hidden[:, -1])
        p = torch.softmax(logits.float(), -1)[:, target]
        layers = sorted(leaves)
        grads = torch.autograd.grad(p.sum(), [leaves[l] for l in layers])
    for l, g in zip(layers, grads):
        grad_sum[l] += g.double().sum(0)


# ---------------------------------------------------------------------------------- knowledge neurons


def knowledge_neurons(scores: torch.Tensor, t: float = 0.2) -> set[tuple[int, int]]:
    """Knowledge neurons of one query: ``{(layer, i) : score[layer, i] > t * max(score)}`` (Dai et al. 2022).

    Empty when no score is positive."""
    if not 0.0 <= t <= 1.0:
        raise ParameterError(f"threshold t must be in [0, 1], got {t}")
    top = float(scores.max())
    if not math.isfinite(top) or top <= 0:
        return set()
    idx = torch.nonzero(scores > t * top, as_tuple=False)
    return {(int(l), int(i)) for l, i in idx.tolist()}
