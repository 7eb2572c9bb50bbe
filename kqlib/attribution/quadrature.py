"""Path points and weights of the integrated-gradients path integral on [0, 1].

IG needs ``integral_0^1 grad p(b + alpha (a - b)) d alpha``; a rule replaces it by ``sum_k w_k grad p(x_k)``
with nodes ``alpha_k`` and weights ``w_k`` (``sum_k w_k = 1``):

* ``"riemann"`` (default; the paper's and knowledge-neurons' convention): ``alpha_k = linspace(0, 1, steps)``
  (both ends included), ``w_k = 1 / steps``. ``steps = 1`` is the single node ``alpha = 1`` with weight 1,
  i.e. ``(a - b) * grad p(a)``: the attribution-patching estimate (a first-order Taylor expansion at ``a``).
* ``"gauss"``: Gauss–Legendre nodes and weights mapped from [-1, 1] to [0, 1]
  (``alpha = (xi + 1) / 2``, ``w = omega / 2``); exact for polynomials of degree <= 2 steps - 1.
  Captum's ``IntegratedGradients`` offers the same two families (``riemann_*`` and ``gausslegendre``).
* ``"gauss-log"``: Gauss–Legendre in ``s = log(alpha)`` on ``[LOG_START, 1]`` (nodes ``alpha = e^s``, weights
  ``alpha w_s``; the piece ``[0, LOG_START]`` left out, so ``sum_k w_k = 1 - LOG_START``). For paths whose
  integrand falls like ``1 / alpha`` (scale-invariant layers, Gemma2/3: :mod:`.adaptive`), where a rule in
  alpha misses the region that decides the scores; the reference of chapter 06 and the benchmark there.
* ``"adaptive"``: error-controlled, per layer (:mod:`.adaptive`); it places its own nodes, on panels of
  :func:`kronrod` rules, so it takes ``tol`` instead of ``steps``.

Gauss–Kronrod pair on [-1, 1] (Kronrod 1965): the n Gauss nodes plus the n + 1 roots of the Stieltjes polynomial
``E_{n+1}`` (monic, ``integral P_n(x) E_{n+1}(x) x^k dx = 0`` for ``k = 0..n``); the 2n + 1 weights make the rule
exact for degree 3n + 1 (3n + 2 for odd n). ``|K - G|`` estimates the error of the Gauss rule.
"""

from __future__ import annotations

import numpy as np
import torch

from kqlib.errors import ParameterError

import math

RULES = ("riemann", "gauss", "gauss-log", "adaptive")
FIXED_RULES = ("riemann", "gauss", "gauss-log")
LOG_START = 1e-10  # "gauss-log" and the adaptive rule's log panels cover [LOG_START, 1]
DEFAULT_STEPS = 20  # path points of a fixed rule when none are given (the paper's)
DEFAULT_TOL = 1e-2  # rule="adaptive": estimated max abs error / max |score|


def check_rule(rule: str, steps, tol=None) -> None:
    """Refuse a rule with the wrong companions: a fixed rule takes ``steps`` (positive integer) and no ``tol``;
    ``adaptive`` takes ``tol`` (finite, > 0; None = :data:`DEFAULT_TOL`) and no ``steps``."""
    if rule not in RULES:
        raise ParameterError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "adaptive":
        if steps is not None:
            raise ParameterError(f"rule='adaptive' places its own path points: leave steps unset (got steps={steps!r}) "
                                 f"and set the accuracy with tol (default {DEFAULT_TOL})")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating))
                                or not math.isfinite(float(tol)) or float(tol) <= 0):
            raise ParameterError(f"tol must be a finite number > 0 (estimated max abs error / max |score|, e.g. "
                                 f"1e-2), got {tol!r}")
        return
    if tol is not None:
        raise ParameterError(f"tol applies to rule='adaptive' only; rule={rule!r} uses steps (got tol={tol!r})")
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or int(steps) < 1:
        raise ParameterError(f"steps must be a positive integer (path points), got {steps!r}")


def path_nodes(steps: int | None, rule: str = "riemann") -> tuple[torch.Tensor, torch.Tensor]:
    """``(alphas, weights)``, float64 tensors ``[steps]``; ``weights.sum() == 1``. Fixed rules only."""
    if rule == "adaptive":
        raise ParameterError("rule='adaptive' has no fixed nodes: its nodes depend on the integrand "
                             "(kqlib.attribution.adaptive)")
    check_rule(rule, steps)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if rule == "gauss":
        xi, omega = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy((xi + 1) / 2), torch.from_numpy(omega / 2)
    if rule == "gauss-log":
        xi, omega = np.polynomial.legendre.leggauss(steps)
        span = math.log(1.0 / LOG_START)
        alphas = np.exp(math.log(LOG_START) + span * (xi + 1) / 2)
        return torch.from_numpy(alphas), torch.from_numpy(alphas * span * omega / 2)
    if steps == 1:
        return torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return torch.linspace(0, 1, steps, dtype=torch.float64), torch.full((steps,), 1 / steps, dtype=torch.float64)


def kronrod(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss–Kronrod pair on [0, 1]: ``(nodes [2n+1], kronrod_weights [2n+1], gauss_weights [2n+1])`` (float64;
    the Gauss weights are 0 at the n + 1 Kronrod-only nodes). See the module docstring."""
    xg, _ = np.polynomial.legendre.leggauss(n)
    xq, wq = np.polynomial.legendre.leggauss(3 * n + 2)  # exact for the moments below (degree <= 3n + 1)
    pn = np.polynomial.legendre.Legendre.basis(n)(xq)
    moment = lambda m: float(np.sum(wq * pn * xq ** m))  # noqa: E731
    a = np.array([[moment(j + k) for j in range(n + 1)] for k in range(n + 1)])
    rhs = -np.array([moment(n + 1 + k) for k in range(n + 1)])
    coef = np.linalg.solve(a, rhs)  # E(x) = x^{n+1} + sum_j coef_j x^j
    roots = np.roots(np.concatenate([[1.0], coef[::-1]]))
    if np.abs(roots.imag).max() > 1e-12:
        raise ArithmeticError(f"Kronrod extension of Gauss-{n} has complex nodes")
    x = np.sort(np.concatenate([xg, roots.real]))
    legendre = np.stack([np.polynomial.legendre.Legendre.basis(j)(x) for j in range(2 * n + 1)])
    exact = np.zeros(2 * n + 1)
    exact[0] = 2.0  # integral of P_j over [-1, 1]
    wk = np.linalg.solve(legendre, exact)
    _, wg_raw = np.polynomial.legendre.leggauss(n)
    wg = np.zeros(2 * n + 1)
    for xi, w in zip(xg, wg_raw):
        wg[np.argmin(np.abs(x - xi))] = w
    return (x + 1) / 2, wk / 2, wg / 2
