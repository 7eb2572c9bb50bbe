"""What an attribution is, as one frozen value: method, path points, rule, site. Its :meth:`key` is the only
cache key of an attribution result (neurons and knowledge synapses alike)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

from kqlib.errors import ParameterError
from kqlib.attribution.quadrature import DEFAULT_STEPS, DEFAULT_TOL, check_rule

METHODS = ("ig", "amig", "sig")
SITES = ("post", "pre")
SYNAPSE_METHOD = "attention-ig"  # IG over the answer position's attention row (knowledge synapses)

#: bump when the meaning or the numerics of cached scores change (2: fused target-probability head, rule)
CACHE_VERSION = 2
#: the adaptive rule's own version, in its keys only (2: log(alpha) panels on scale-invariant paths, Gemma2/3)
ADAPTIVE_VERSION = 2


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (baselines enter the cache key by digest)."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass(frozen=True)
class AttributionConfig:
    """``method``: ``ig`` | ``amig`` | ``sig`` (neurons) or ``attention-ig`` (synapses); ``steps``: path points
    of a fixed rule (None = 20); ``rule``: ``riemann`` | ``gauss`` | ``adaptive``
    (:mod:`kqlib.attribution.quadrature`); ``tol``: the adaptive rule's tolerance (None = 1e-2; estimated max
    abs error / max |score|); ``site``: ``post`` | ``pre`` (neurons; ignored for synapses). Invalid values (or
    ``steps`` with ``adaptive``, ``tol`` with a fixed rule) raise :class:`~kqlib.errors.ParameterError` at once.
    ``tol`` and :data:`ADAPTIVE_VERSION` enter the key only for the adaptive rule (so the keys of fixed rules
    are those of version 2)."""

    method: str = "ig"
    steps: int | None = None
    rule: str = "riemann"
    site: str = "post"
    tol: float | None = None

    def __post_init__(self):
        if self.method not in (*METHODS, SYNAPSE_METHOD):
            raise ParameterError(f"method must be one of {METHODS}, got {self.method!r}")
        check_rule(self.rule, self.steps, self.tol)
        if self.site not in SITES:
            raise ParameterError(f"site must be one of {SITES}, got {self.site!r}")
        if self.rule == "adaptive":
            object.__setattr__(self, "tol", float(DEFAULT_TOL if self.tol is None else self.tol))
        else:
            object.__setattr__(self, "steps", int(DEFAULT_STEPS if self.steps is None else self.steps))

    def key(self, model_fingerprint: str, prompt: str, target_id: int, baseline: torch.Tensor | None = None) -> str:
        """sha256 over (model fingerprint, prompt, target token id, this config, baseline digest, version)."""
        return self.key_with_digest(model_fingerprint, prompt, target_id,
                                    None if baseline is None else tensor_digest(baseline))

    def key_with_digest(self, model_fingerprint: str, prompt: str, target_id: int, baseline_digest: str | None) -> str:
        """:meth:`key` when only the baseline's digest is at hand (a Ray driver)."""
        fields = {**asdict(self), "model": model_fingerprint, "prompt": prompt, "target": int(target_id),
                  "baseline": baseline_digest, "cache_version": CACHE_VERSION}
        if self.method == SYNAPSE_METHOD:
            fields["site"] = None
        if self.rule != "adaptive":
            del fields["tol"]
        else:
            fields["adaptive_version"] = ADAPTIVE_VERSION
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
