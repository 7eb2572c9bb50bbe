"""Path points and weights of the integrated-gradients path integral on [0, 1].

IG needs ``integral_0^1 grad p(b + alpha (a - b)) d alpha``; a rule replaces it by ``sum_k w_k grad p(x_k)``
with nodes ``alpha_k`` and weights ``w_k`` (``sum_k w_k = 1``):

* ``"riemann"`` (default; the paper's and knowledge-neurons' convention): ``alpha_k = linspace(0, 1, steps)``
  (both ends included), ``w_k = 1 / steps``. ``steps = 1`` is the single node ``alpha = 1`` with weight 1,
  i.e. ``(a - b) * grad p(a)``: the attribution-patching estimate (a first-order Taylor expansion at ``a``).
* ``"gauss"``: Gauss–Legendre nodes and weights mapped from [-1, 1] to [0, 1]
  (``alpha = (xi + 1) / 2``, ``w = omega / 2``); exact for polynomials of degree <= 2 steps - 1.
  Captum's ``IntegratedGradients`` offers the same two families (``riemann_*`` and ``gausslegendre``).
"""

from __future__ import annotations

import numpy as np
import torch

from kqlib.errors import ParameterError

RULES = ("riemann", "gauss")


def check_rule(rule: str, steps) -> None:
    if rule not in RULES:
        raise ParameterError(f"rule must be one of {RULES}, got {rule!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or int(steps) < 1:
        raise ParameterError(f"steps must be a positive integer (path points), got {steps!r}")


def path_nodes(steps: int, rule: str = "riemann") -> tuple[torch.Tensor, torch.Tensor]:
    """``(alphas, weights)``, float64 tensors ``[steps]``; ``weights.sum() == 1``."""
    check_rule(rule, steps)
    steps = int(steps)
    if rule == "gauss":
        xi, omega = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy((xi + 1) / 2), torch.from_numpy(omega / 2)
    if steps == 1:
        return torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return torch.linspace(0, 1, steps, dtype=torch.float64), torch.full((steps,), 1 / steps, dtype=torch.float64)
