"""What an attribution is, as one frozen value: method, path points, rule, site. Its :meth:`key` is the only
cache key of an attribution result (neurons and knowledge synapses alike)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

from kqlib.errors import ParameterError
from kqlib.attribution.quadrature import check_rule

METHODS = ("ig", "amig", "sig")
SITES = ("post", "pre")
SYNAPSE_METHOD = "attention-ig"  # IG over the answer position's attention row (knowledge synapses)

#: bump when the meaning or the numerics of cached scores change (2: fused target-probability head, rule)
CACHE_VERSION = 2


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (baselines enter the cache key by digest)."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass(frozen=True)
class AttributionConfig:
    """``method``: ``ig`` | ``amig`` | ``sig`` (neurons) or ``attention-ig`` (synapses); ``steps``: path points;
    ``rule``: ``riemann`` | ``gauss`` (:mod:`kqlib.attribution.quadrature`); ``site``: ``post`` | ``pre``
    (neurons; ignored for synapses). Invalid values raise :class:`~kqlib.errors.ParameterError` at once."""

    method: str = "ig"
    steps: int = 20
    rule: str = "riemann"
    site: str = "post"

    def __post_init__(self):
        if self.method not in (*METHODS, SYNAPSE_METHOD):
            raise ParameterError(f"method must be one of {METHODS}, got {self.method!r}")
        check_rule(self.rule, self.steps)
        if self.site not in SITES:
            raise ParameterError(f"site must be one of {SITES}, got {self.site!r}")
        object.__setattr__(self, "steps", int(self.steps))

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
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
