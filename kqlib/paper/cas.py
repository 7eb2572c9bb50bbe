"""The Consistency-Aware Score (paper §5, Eq. 7) and the neurons it selects."""

from __future__ import annotations

import math

import torch

from kqlib.errors import ParameterError
from kqlib.paper.stats import WelchResult, bootstrap_ci, cluster_bootstrap_ci, wilson_ci  # noqa: F401 (re-exported)

from kqlib.paper.consistency import otsu_threshold


def cas_scores(per_query_scores, beta1: float = 1.0, beta2: float = 1.0, normalize: str | None = "max") -> torch.Tensor:
    """Consistency-Aware Score (Eq. 7): CAS = β1·μ − β2·σ, shape ``[L, N]``.

    ``per_query_scores``: ``[k, L, N]`` attribution (or activation) scores of one fact's k queries (a tensor,
    array, or list of k ``[L, N]`` tensors).
    a_i = s_i / max(s_i) per query (``normalize="max"``; a query without a positive score contributes zeros),
    ``"absmax"`` divides by max|s_i|, ``None``/``"none"`` keeps raw scores. μ = mean_i a_i, σ = population std
    sqrt(mean_i (a_i − μ)²).
    """
    scores = per_query_scores
    if isinstance(scores, (list, tuple)) and scores and isinstance(scores[0], torch.Tensor):
        per_query_scores = torch.stack([t.detach() for t in scores])
    s = torch.as_tensor(per_query_scores)
    if s.dim() != 3 or s.shape[0] < 1:
        raise ParameterError(
            f"per_query_scores must have shape [k, n_layers, n_neurons] with k >= 1, got {tuple(s.shape)}"
        )
    s = s.detach().to(torch.float64)
    if normalize in (None, "none"):
        a = s
    elif normalize in ("max", "absmax"):
        flat = s.reshape(s.shape[0], -1)
        top = flat.abs().amax(dim=1) if normalize == "absmax" else flat.amax(dim=1)
        ok = torch.isfinite(top) & (top > 0)
        scale = torch.where(ok, 1.0 / torch.where(ok, top, torch.ones_like(top)), torch.zeros_like(top))
        a = s * scale.view(-1, 1, 1)
    else:
        raise ParameterError(f"normalize must be 'max', 'absmax' or None, got {normalize!r}")
    mu = a.mean(dim=0)
    sigma = a.std(dim=0, correction=0)
    return (beta1 * mu - beta2 * sigma).to(torch.float32)


def cas_neurons(cas, threshold: float = 0.3, method: str = "static", bins: int = 256) -> set[tuple[int, int]]:
    """Neurons selected by CAS ``[L, N]``: ``{(layer, neuron)}``.

    ``"static"``: CAS > threshold · max CAS (empty when max CAS ≤ 0). ``"otsu"``: the high class of Otsu's
    split of the positive CAS values, i.e. CAS ≥ θ with θ = ``otsu_threshold(positive, position="edge")``
    (``threshold`` unused); with fewer than 2 distinct positive values, all positive neurons are selected.
    """
    c = torch.as_tensor(cas).detach().to(torch.float64)
    if c.dim() != 2:
        raise ParameterError(f"cas must have shape [n_layers, n_neurons], got {tuple(c.shape)}")
    if method == "static":
        if not 0.0 <= threshold <= 1.0:
            raise ParameterError(f"threshold must be in [0, 1] (a fraction of max CAS), got {threshold}")
        top = float(c.max())
        if not math.isfinite(top) or top <= 0:
            return set()
        mask = c > threshold * top
    elif method == "otsu":
        positive = c[c > 0]
        if positive.numel() == 0:
            return set()
        if torch.unique(positive).numel() < 2:
            mask = c > 0
        else:
            mask = c >= otsu_threshold(positive.cpu().numpy(), bins, position="edge")
    else:
        raise ParameterError(f"method must be 'static' or 'otsu', got {method!r}")
    return {(int(l), int(i)) for l, i in torch.nonzero(mask, as_tuple=False).tolist()}
