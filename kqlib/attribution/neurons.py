"""Knowledge-neuron attribution by integrated gradients over MLP neurons: exact and fast.

For a query (prompt, target token t) let ``a_l`` be layer l's neuron vector at the last prompt position
(``[n_neurons]``), ``b_l`` a baseline vector and ``p(x)`` the probability of t when ``a_l`` is replaced by
``x``. With path nodes and weights ``(alpha_k, w_k)`` of a rule (:mod:`.quadrature`; default ``riemann``:
``alpha_k = linspace(0, 1, steps)``, both ends included, ``w_k = 1/steps``, as in EleutherAI's knowledge-neurons):

    score_l = (a_l - b_l) * sum_k w_k  dp/dx |_{x = b_l + alpha_k (a_l - b_l)}          ([n_neurons] per layer)

* ``ig``   (Dai et al. 2022): b_l = 0, so score_l = a_l * mean_k grad p(alpha_k a_l).
* ``amig`` (Chen et al. 2024): b_l = mean activation over a reference set (:func:`amig_baseline`).
* ``sig``  (Enguehard et al. 2023, adapted to neurons; our reading, documented here): SIG interpolates one
  input feature while every other feature keeps its actual value. Here the features are the layers' neuron
  vectors at the answer position: layer l is interpolated from 0 to a_l while every *other* layer's neuron
  vector is held at its original value (downstream MLPs cannot react), so SIG measures the part of a layer's
  effect that does not pass through later MLP neurons. With one layer SIG == IG.

:func:`attribute` runs the staircase engine (:mod:`.engine`); :func:`attribute_reference` is the plain
full-recompute implementation the tests compare it against.
"""

from __future__ import annotations

import math

import torch

from kqlib.errors import KqError, ParameterError
from kqlib.core.hooks import capture, site_hooks
from kqlib.attribution.config import METHODS, AttributionConfig  # noqa: F401 (METHODS re-exported)
from kqlib.attribution.adaptive import Diagnostics, adaptive_integrate, completeness_gaps
from kqlib.attribution.engine import NeuronPath, base_pass, integrate
from kqlib.attribution.quadrature import path_nodes
from kqlib.attribution.targets import target_token

# AMIG's reference sentence (Chen et al. 2024 use the mean activation over its tokens as one baseline).
AMIG_REFERENCE = "The sky is yellow. Apples grow under the ground. Birds live in the sea."


class InvalidAttributionError(KqError, RuntimeError):
    """The computed scores are not a valid attribution (non-finite, or all zero while p(target) > 0)."""


def check_batch_size(batch_size, memory_budget=None) -> None:
    """Refuse a ``batch_size`` (path points per chunk) or ``memory_budget`` (bytes) that is not a positive int."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ParameterError(f"batch_size must be a positive integer (path points per chunk) or None, "
                             f"got {batch_size!r}")
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                      or memory_budget < 1):
        raise ParameterError(f"memory_budget must be a positive number of bytes (an int, e.g. 2**30 for 1 GiB) "
                             f"or None, got {type(memory_budget).__name__} {memory_budget!r}")


def check_baseline(lm, method: str, baseline) -> None:
    """Refuse a baseline that is not an ``[n_layers, n_neurons]`` tensor of finite numbers (or one given to a
    method other than ``amig``)."""
    if baseline is None:
        return
    if method != "amig":
        raise ParameterError(f"a baseline is only used by method='amig', not {method!r}")
    shape = (lm.n_layers, lm.n_neurons)
    if not torch.is_tensor(baseline) or tuple(baseline.shape) != shape or not baseline.is_floating_point():
        got = f"a tensor of shape {list(baseline.shape)}" if torch.is_tensor(baseline) else type(baseline).__name__
        raise ParameterError(f"the AMIG baseline must be a float tensor of shape [n_layers, n_neurons] = "
                             f"{list(shape)} for {lm.name}, got {got} (amig_baseline(lm) makes one)")
    if not bool(torch.isfinite(baseline).all()):
        raise ParameterError("the AMIG baseline has non-finite values")


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
    """The baseline ``[L, N]`` of ``method`` (None = zeros), on the model's device and dtype."""
    if method == "amig":
        return amig_baseline(lm, site=site) if baseline is None else baseline.to(lm.device, lm.dtype)
    if baseline is not None:
        raise ParameterError(f"a baseline is only used by method='amig', not {method!r}")
    return None


# ---------------------------------------------------------------------------------------- reference


def attribute_reference(lm, prompt: str, target, *, method: str = "ig", steps: int | None = None,
                        site: str = "post", rule: str = "riemann", baseline: torch.Tensor | None = None,
                        nodes: list | None = None) -> torch.Tensor:
    """Plain implementation: for every layer and path point, rerun the whole prompt. ``[L, N]`` float32.

    ``nodes``: per layer ``(alphas, weights)`` instead of ``rule``/``steps`` (e.g. the adaptive rule's final
    nodes, :func:`kqlib.attribution.adaptive.panel_nodes` of its ``Diagnostics.panels``)."""
    if nodes is None:
        if rule == "adaptive":
            raise ParameterError("the reference has no adaptive rule: pass the adaptive rule's nodes as `nodes` "
                                 "(panel_nodes of its Diagnostics.panels)")
        AttributionConfig(method=method, steps=steps, rule=rule, site=site)  # refuses bad values at once
    check_baseline(lm, method, baseline)
    t = target_token(lm, prompt, target)
    ids = lm.encode(prompt)
    with torch.no_grad(), capture(lm, site) as acts:
        lm.model(ids, use_cache=False)
    a = torch.stack([acts[l][0] for l in range(lm.n_layers)])
    b = _baseline_for(lm, method, baseline, site)
    b = torch.zeros_like(a) if b is None else b
    if nodes is None:
        nodes = [path_nodes(steps, rule)] * lm.n_layers
    scores = torch.zeros(lm.n_layers, lm.n_neurons, dtype=_result_dtype(lm))
    for layer in range(lm.n_layers):
        alphas, weights = nodes[layer]
        alphas, weights = alphas.to(a.device, a.dtype), weights.to(a.device)
        if len(alphas) == 0:
            continue
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
            logits = lm.model(ids.expand(len(alphas), -1), use_cache=False, logits_to_keep=1).logits[:, -1]
            p = torch.softmax(logits.double() if lm.dtype == torch.float64 else logits.float(), -1)[:, t]
            (g,) = torch.autograd.grad((p * weights.to(p.dtype)).sum(), x)
        scores[layer] = ((a[layer] - b[layer]).double() * g.double().sum(0)).to(scores.dtype).cpu()
    return scores


def _result_dtype(lm) -> torch.dtype:
    """Scores are float32, or float64 for a float64 model (exactness checks)."""
    return torch.float64 if lm.dtype == torch.float64 else torch.float32


def _clamp_last(v: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    out = v.clone()
    out[:, -1] = value
    return out


# --------------------------------------------------------------------------------------------- fast


class Attribution:
    """An attribution with its :class:`~kqlib.attribution.adaptive.Diagnostics`: ``.scores`` ``[L, N]``,
    ``.diagnostics``."""

    def __init__(self, scores: torch.Tensor, diagnostics: Diagnostics | None):
        self.scores, self.diagnostics = scores, diagnostics

    def __repr__(self) -> str:
        return f"Attribution(scores={tuple(self.scores.shape)}, diagnostics={self.diagnostics!r})"


def attribute(lm, prompt: str, target, *, method: str = "ig", steps: int | None = None, site: str = "post",
              rule: str = "riemann", batch_size: int | None = None, baseline: torch.Tensor | None = None,
              memory_budget: int | None = None, tol: float | None = None) -> torch.Tensor:
    """Attribution scores ``[n_layers, n_neurons]`` (float32, CPU) of the neurons at the last prompt position
    for ``p(target | prompt)``; see the module docstring for the formula of each ``method`` and ``rule``.

    ``target``: a token id (any integer type, in range) or a non-empty answer string (its first token after
    the prompt). ``rule``: ``riemann`` (the paper's; ``steps`` points, default 20), ``gauss`` (``steps``
    Gauss–Legendre points) or ``adaptive`` (error-controlled to ``tol``, default 1e-2 of the largest score;
    no ``steps``; :mod:`kqlib.attribution.adaptive`). ``batch_size``: path points per chunk; by default chunks
    are sized by ``memory_budget`` (bytes; 512 MiB on CPU, 8 GiB on CUDA), counting the prompt length. Raises
    :class:`InvalidAttributionError` instead of returning non-finite or all-zero scores. The diagnostics
    (estimated error, points per layer, completeness gaps): :func:`attribute_with_diagnostics`.
    """
    return attribute_with_diagnostics(lm, prompt, target, method=method, steps=steps, site=site, rule=rule,
                                      batch_size=batch_size, baseline=baseline, memory_budget=memory_budget,
                                      tol=tol, diagnostics=False).scores


def attribute_with_diagnostics(lm, prompt: str, target, *, method: str = "ig", steps: int | None = None,
                               site: str = "post", rule: str = "riemann", batch_size: int | None = None,
                               baseline: torch.Tensor | None = None, memory_budget: int | None = None,
                               tol: float | None = None, diagnostics: bool = True) -> Attribution:
    """:func:`attribute` returning an :class:`Attribution` (scores and :class:`Diagnostics`). The completeness
    gaps cost one forward-only row per layer; with ``diagnostics=False`` (what :func:`attribute` does) they are
    skipped and ``.diagnostics`` is None for fixed rules."""
    config = AttributionConfig(method=method, steps=steps, rule=rule, site=site, tol=tol)  # refuses bad values
    check_batch_size(batch_size, memory_budget)
    check_baseline(lm, method, baseline)
    t = target_token(lm, prompt, target)
    ids = lm.encode(prompt)
    path = NeuronPath(lm, site, clamp_others=(method == "sig"))
    with path.recording():
        base = base_pass(lm, ids, t)
    path.baseline = _baseline_for(lm, method, baseline, site)
    chunking = dict(batch_size=batch_size, memory_budget=memory_budget)
    if rule == "adaptive":
        grad, info = adaptive_integrate(lm, base, path, t, config.tol, **chunking)
    else:
        alphas, weights = path_nodes(config.steps, rule)
        grad = integrate(lm, base, path, alphas, weights, t, **chunking)
        info = {"error_estimate": None, "converged": None, "points": [config.steps] * lm.n_layers, "panels": None}
    b = torch.zeros_like(path.values) if path.baseline is None else path.baseline
    scores = ((path.values - b).double() * grad).to(_result_dtype(lm)).cpu()
    check_scores(scores, base.prob, prompt, t)
    diag = None
    if diagnostics or rule == "adaptive":
        gaps = completeness_gaps(lm, base, path, t, scores, **chunking) if diagnostics else None
        diag = Diagnostics(rule=rule, tol=config.tol, completeness_gap=gaps, max_score=float(scores.abs().max()),
                           **info)
    return Attribution(scores, diag)


def check_scores(scores: torch.Tensor, prob: float, prompt: str, target: int) -> None:
    """Refuse what is not an attribution: non-finite values, or all zeros although p(target) > 0."""
    if not bool(torch.isfinite(scores).all()):
        raise InvalidAttributionError(
            f"attribution of token {target} after {prompt!r} has non-finite scores (overflow in the model's "
            "dtype?); nothing was cached. Try dtype=torch.float32 or a shorter prompt.")
    if prob > 1e-30 and float(scores.abs().max()) == 0.0:
        raise InvalidAttributionError(
            f"attribution of token {target} after {prompt!r} is all zeros although p(target) = {prob:.3g}; "
            "nothing was cached. This is a bug: please report it with the model and prompt.")


# ---------------------------------------------------------------------------------- knowledge neurons


def knowledge_neurons(scores: torch.Tensor, t: float = 0.2) -> set[tuple[int, int]]:
    """Knowledge neurons of one query: ``{(layer, i) : score[layer, i] > t * max(score)}`` (Dai et al. 2022).

    Empty when no score is positive."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
        raise ParameterError(f"threshold t must be a number in [0, 1] (e.g. 0.2), got {type(t).__name__} {t!r}")
    if not torch.is_tensor(scores) or scores.dim() < 1:
        raise ParameterError(f"scores must be a tensor of attribution scores, got {type(scores).__name__}")
    top = float(scores.max())
    if not math.isfinite(top) or top <= 0:
        return set()
    idx = torch.nonzero(scores > t * top, as_tuple=False)
    return {(int(l), int(i)) for l, i in idx.tolist()}
