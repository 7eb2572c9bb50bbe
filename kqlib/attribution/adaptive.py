"""Error-controlled integrated gradients: ``rule="adaptive"``, and the diagnostics every attribution carries.

Per layer l the score is the integral of the vector integrand ``f_l(alpha) = (a_l - b_l) * grad p(x_l(alpha))``
over [0, 1]. The adaptive rule covers [0, 1] with panels ``[lo, hi]``; on each it evaluates the Gauss–Kronrod
pair of :func:`kqlib.attribution.quadrature.kronrod` (``KRONROD_N`` Gauss nodes, ``2 KRONROD_N + 1`` nodes in all):

    S_p = (hi - lo) sum_j wK_j f(lo + (hi - lo) x_j),      e_p = |(hi - lo) sum_j (wK_j - wG_j) f(...)|   ([N])

``S_p`` is the panel's estimate and ``e_p`` (per neuron) its estimated error, the Gauss rule's error ``|K - G|``
(conservative for ``K``). Layer l's estimated error is ``E_l = max_i sum_p e_{p,i}``. With ``S = max_{l,i}
|score_{l,i}|`` the attribution is accepted when ``max_l E_l <= tol * S``: the error measure of chapter 06
(max abs error / max |score|). Otherwise, in every layer with ``E_l > tol * S``, each panel whose error exceeds
its share ``tol * S * (hi - lo)`` is split (at least the worst one) into 2-8 pieces (:func:`_pieces`), down to
width ``2^-MAX_DEPTH``, until ``MAX_POINTS_PER_LAYER``, and never a panel whose error estimate is within the
rounding of the model's dtype (a bf16 model's gradients are too noisy to refine: no end otherwise). All new
panels of all layers form one round of rows for the one staircase engine (:func:`.engine.run_rows`), so layers
needing 7 points and layers needing 100 share batches.

**Scale-invariant paths** (Gemma2/3: :attr:`kqlib.LM.normalized_outputs`). There each layer's MLP output (and
attention output) is RMS-normalised before the residual add, so scaling the layer's neurons by alpha leaves the
model unchanged except below ``alpha* ~ sqrt(eps) / rms(output)`` (1e-3 and below): p_l(alpha) is flat above
alpha*, and each neuron's integrand falls like ``c_i / alpha`` there (the ``c_i`` sum to ~0, so completeness
holds, but each neuron's score carries ``c_i log(1 / alpha*)``). A rule in alpha cannot follow that: a fixed
Riemann or Gauss rule, or panels no narrower than 2^-10, misses the region below alpha* where the scores are
decided. The substitution ``alpha = e^s`` turns ``c / alpha`` into a constant and the step at alpha* into a
smooth one: such paths are integrated on ``[LOG_START, 1]`` with panels in log(alpha) (:func:`panel_rule`;
nodes ``lo (hi/lo)^x``, weights ``alpha ln(hi/lo) w``), split evenly in log(alpha). The piece
``[0, LOG_START]`` (1e-10 of the path, where the integrand is bounded by its value at alpha*) is left out.
A panel's share of the budget is its width in its own variable (alpha, or log(alpha) / ln(1 / LOG_START)).

Diagnostics (:class:`Diagnostics`): the estimated relative error (adaptive rule; None for fixed rules), the path
points used per layer, and per layer the completeness gap ``|sum_i score_{l,i} - (p_l(1) - p_l(0))|``, where
``p_l(alpha)`` is p(target) with layer l's path at ``alpha`` (IG's completeness axiom; for the exact integral
the gap is 0, so it bounds the quadrature error of the layer's sum from below).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch

from kqlib.attribution.engine import run_rows
from kqlib.attribution.quadrature import LOG_START, kronrod

KRONROD_N = 2  # Gauss-2 / Kronrod-5 panels (3 SmolLM2 queries: 280-310 points per attribution, riemann-20 uses 600)
MAX_DEPTH = 10  # narrowest panel: 2^-10 of the path
SPLIT_MAX = 8  # most pieces one panel is split into in one round (3 SmolLM2 queries: 4-5 rounds instead of 6-7)
MAX_POINTS_PER_LAYER = 640  # refinement stops there (converged False)
NOISE = 8  # a panel whose error estimate is within NOISE x the dtype's rounding of its nodes is not split
MIN_MEASURE = 2.0 ** -MAX_DEPTH  # narrowest panel, in its own variable (see _measure)
LOG_SPAN = math.log(1.0 / LOG_START)  # width of the log region in log(alpha)


@dataclass
class Diagnostics:
    """What one attribution cost and how accurate it is (see the module docstring). Lists are per layer."""

    rule: str
    tol: float | None
    error_estimate: float | None  # estimated max abs error / max |score| (adaptive only)
    converged: bool | None  # error_estimate <= tol (adaptive only)
    points: list[int]  # gradient path points evaluated per layer
    completeness_gap: list[float] | None  # |sum_i score_{l,i} - (p_l(1) - p_l(0))| (None: not computed)
    max_score: float
    panels: list[list[list]] | None = field(default=None)  # adaptive: final [lo, hi] (or [lo, hi, "log"]) per layer

    @property
    def total_points(self) -> int:
        return int(sum(self.points))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Diagnostics":
        return cls(**json.loads(text))

    def layer_table(self):
        """One row per layer: points, completeness gap (and panels for the adaptive rule); a pandas DataFrame."""
        import pandas as pd  # heavy: pandas, not otherwise imported by `import kqlib`

        rows = {"layer": list(range(len(self.points))), "points": self.points,
                "completeness_gap": self.completeness_gap or [None] * len(self.points)}
        if self.panels is not None:
            rows["panels"] = [len(p) for p in self.panels]
        return pd.DataFrame(rows)


def panel_rule(lo: float, hi: float, log: bool = False, n: int | None = None) -> tuple[torch.Tensor, ...]:
    """``(alphas, kronrod_weights, gauss_weights)`` float64 ``[2n + 1]`` of the Kronrod pair on one panel:
    plain, ``alpha = lo + (hi - lo) x`` with weights ``(hi - lo) w``; or logarithmic (``log``, ``lo > 0``), the
    substitution ``alpha = e^s``: ``alpha = lo (hi / lo)^x`` with weights ``alpha ln(hi / lo) w``."""
    x, wk, wg = (torch.from_numpy(v) for v in kronrod(KRONROD_N if n is None else n))
    if log:
        r = math.log(hi / lo)
        alphas = lo * torch.exp(r * x)
        return alphas, r * alphas * wk, r * alphas * wg
    return lo + (hi - lo) * x, (hi - lo) * wk, (hi - lo) * wg


def reference_rule(lm, method: str = "ig") -> str:
    """The fixed rule of a converged reference for ``lm``'s paths: ``"gauss-log"`` (Gauss–Legendre in
    log(alpha)) where the path is scale-invariant (normalised layer outputs, and a path from 0: not ``amig``),
    else ``"gauss"``. Gauss-128 in alpha is 0.2-0.4 % of the largest score off on tiny Gemma2/3 models."""
    return "gauss-log" if lm.normalized_outputs and method != "amig" else "gauss"


def initial_panels(scale_invariant: bool) -> list[tuple[float, float, bool]]:
    """Each layer's first panels ``(lo, hi, log)``: ``[0, 1]``; for a scale-invariant path (Gemma2/3, see the
    module docstring) ``[LOG_START, 1]`` in log(alpha), ``[0, LOG_START]`` left out."""
    return [(LOG_START, 1.0, True)] if scale_invariant else [(0.0, 1.0, False)]


def _measure(lo: float, hi: float, log: bool) -> float:
    """A panel's share of its layer's path, for its share of the error budget: its width in the variable it is
    integrated in (alpha, or log(alpha) over the log region's width)."""
    return math.log(hi / lo) / LOG_SPAN if log else hi - lo


def _split(lo: float, hi: float, log: bool, k: int) -> list[tuple[float, float, bool]]:
    """``k`` equal pieces, in alpha or in log(alpha)."""
    if log:
        return [(lo * (hi / lo) ** (i / k), lo * (hi / lo) ** ((i + 1) / k), True) for i in range(k)]
    return [(lo + (hi - lo) * i / k, lo + (hi - lo) * (i + 1) / k, False) for i in range(k)]


def panel_nodes(panels: list[list], n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The composite Kronrod rule of ``panels`` (``[lo, hi]`` plain, ``[lo, hi, "log"]`` logarithmic):
    ``(alphas, weights)`` float64, the nodes where the adaptive rule's final estimate is evaluated (for comparing
    the engine with the plain reference at the same nodes)."""
    if not panels:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    rules = [panel_rule(float(p[0]), float(p[1]), len(p) > 2 and p[2] == "log", n) for p in panels]
    return torch.cat([r[0] for r in rules]), torch.cat([r[1] for r in rules])


def adaptive_integrate(lm, base, path, target: int, tol: float, *, batch_size: int | None = None,
                       memory_budget: int | None = None) -> tuple[torch.Tensor, dict]:
    """``(G [L, *feature], info)``: ``G`` as :func:`.engine.integrate` returns it, at the adaptive nodes;
    ``info``: ``error_estimate``, ``converged``, ``points`` and ``panels`` (see the module docstring)."""
    n_layers = lm.n_layers
    a = path.values
    b = torch.zeros_like(a) if path.baseline is None else path.baseline
    diff = (a - b).double()
    done: list[list[tuple]] = [[] for _ in range(n_layers)]  # per layer: (lo, hi, log, grad, score, err, at_floor)
    first = initial_panels(bool(getattr(path, "scale_invariant", False)))
    pending: list[list[tuple[float, float, bool]]] = [list(first) for _ in range(n_layers)]
    points = [0] * n_layers
    width = 2 * KRONROD_N + 1  # nodes per panel
    eps = torch.finfo(lm.dtype).eps if lm.dtype.is_floating_point else 0.0
    while any(pending):
        rules = [[panel_rule(lo, hi, log) for lo, hi, log in ps] for ps in pending]
        alphas = [torch.cat([r[0] for r in rs]) if rs else torch.zeros(0, dtype=torch.float64) for rs in rules]
        grads: list[torch.Tensor | None] = [
            torch.zeros(len(al), *a.shape[1:], dtype=torch.float64, device=a.device) if len(al) else None
            for al in alphas]

        def keep(layer, ks, g, p):
            grads[layer][torch.tensor(ks, device=a.device)] = g.double()

        run_rows(lm, base, path, alphas, [torch.ones_like(al) for al in alphas], target, keep,
                 batch_size=batch_size, memory_budget=memory_budget)
        for layer, ps in enumerate(pending):
            points[layer] += len(alphas[layer])
            for j, ((lo, hi, log), (_, wk, wg)) in enumerate(zip(ps, rules[layer])):
                g = grads[layer][j * width:(j + 1) * width]
                shape = (-1,) + (1,) * (g.dim() - 1)
                wk, wg = wk.to(g.device).view(shape), wg.to(g.device).view(shape)
                gk, gg = (wk * g).sum(0), (wg * g).sum(0)
                err = (diff[layer] * (gk - gg)).abs()
                # rounding floor: the model dtype's rounding in the node values, summed with |wK| + |wG|
                floor = NOISE * eps * (diff[layer] * ((wk.abs() + wg.abs()) * g.abs()).sum(0)).abs()
                done[layer].append((lo, hi, log, gk, diff[layer] * gk, err, bool((err <= floor).all())))
        pending = [[] for _ in range(n_layers)]
        top = max(float(torch.stack([d[4] for d in ds]).sum(0).abs().max()) for ds in done)
        if top == 0.0:
            break
        budget = tol * top
        for layer, ds in enumerate(done):
            if float(torch.stack([d[5] for d in ds]).sum(0).max()) <= budget:
                continue
            worst = max(range(len(ds)), key=lambda j: float(ds[j][5].max()))
            split = [j for j, d in enumerate(ds) if float(d[5].max()) > budget * _measure(*d[:3]) or j == worst]
            split = [j for j in split if _measure(*ds[j][:3]) > MIN_MEASURE and not ds[j][6]]
            room = MAX_POINTS_PER_LAYER - points[layer]  # points this layer may still use
            taken = set()
            for j in sorted(split, key=lambda j: -float(ds[j][5].max())):
                lo, hi, log = ds[j][:3]
                k = _pieces(float(ds[j][5].max()) / (budget * _measure(lo, hi, log)), _measure(lo, hi, log))
                k = 2 if k * width > room else k
                if k * width > room:
                    break
                room -= k * width
                taken.add(j)
                pending[layer] += _split(lo, hi, log, k)
            done[layer] = [d for j, d in enumerate(done[layer]) if j not in taken]
    grad = torch.stack([torch.stack([d[3] for d in ds]).sum(0) for ds in done])
    scores = diff * grad
    top = float(scores.abs().max())
    err = max(float(torch.stack([d[5] for d in ds]).sum(0).max()) for ds in done)
    rel = err / top if top > 0 else 0.0
    panels = [sorted([float(d[0]), float(d[1])] + (["log"] if d[2] else []) for d in ds) for ds in done]
    return grad, {"error_estimate": rel, "converged": rel <= tol, "points": points, "panels": panels}


def _pieces(ratio: float, measure: float) -> int:
    """Into how many equal panels to split one whose error is ``ratio`` x its share of the budget: the Gauss
    rule's error on a panel of width h falls like h^(2n+1), so k pieces divide error/share by k^(2n); k is a
    power of 2 in [2, SPLIT_MAX] (fewer rounds of small batches), no narrower than ``MIN_MEASURE``."""
    k = 2
    while k < SPLIT_MAX and k ** (2 * KRONROD_N) < ratio and measure / (2 * k) >= MIN_MEASURE:
        k *= 2
    return k


def completeness_gaps(lm, base, path, target: int, scores: torch.Tensor, *, batch_size: int | None = None,
                      memory_budget: int | None = None) -> list[float]:
    """Per layer ``|sum_i scores_{l,i} - (p_l(1) - p_l(0))|``; ``p_l(1)`` is the unmodified model's
    p(target), ``p_l(0)`` one forward-only row per layer at the baseline."""
    p0 = torch.zeros(lm.n_layers, dtype=torch.float64)

    def keep(layer, ks, g, p):
        p0[layer] = p[0].cpu()

    zero = torch.zeros(1, dtype=torch.float64)
    run_rows(lm, base, path, zero, torch.ones(1, dtype=torch.float64), target, keep, grad=False,
             batch_size=batch_size, memory_budget=memory_budget)
    sums = scores.double().reshape(lm.n_layers, -1).sum(1).cpu()
    return [float(v) for v in (sums - (base.prob - p0)).abs()]
