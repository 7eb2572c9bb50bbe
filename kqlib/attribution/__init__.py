"""Attribution: what is scored (config, rule, targets), the one staircase engine, and the methods on it.

* :mod:`.config` -- :class:`AttributionConfig` (method, steps, rule, site); ``.key()`` is the cache key.
* :mod:`.quadrature` -- path nodes and weights (``riemann`` | ``gauss``; Gauss–Kronrod pairs).
* :mod:`.adaptive` -- ``rule="adaptive"`` (error-controlled, per layer) and the :class:`Diagnostics`.
* :mod:`.targets` -- token-id / answer-string target resolution.
* :mod:`.head` -- the fused target-probability head and its exact gradient.
* :mod:`.engine` -- base pass + staircase, for any path (neurons at a site, attention rows).
* :mod:`.neurons` -- ``ig`` / ``amig`` / ``sig`` over MLP neurons, the plain reference, knowledge neurons.
* :mod:`.synapses` -- IG over the answer position's attention row (knowledge synapses), and its reference.
"""

from kqlib.attribution.config import CACHE_VERSION, METHODS, SITES, AttributionConfig, tensor_digest
from kqlib.attribution.adaptive import Diagnostics, panel_nodes, reference_rule
from kqlib.attribution.neurons import (AMIG_REFERENCE, Attribution, InvalidAttributionError, amig_baseline, attribute,
                                       attribute_reference, attribute_with_diagnostics, check_baseline,
                                       check_batch_size, check_scores, knowledge_neurons)
from kqlib.attribution.quadrature import DEFAULT_TOL, RULES, path_nodes
from kqlib.attribution.synapses import attribute_attention, attribute_attention_reference, knowledge_synapses
from kqlib.attribution.targets import target_token

__all__ = [
    "AMIG_REFERENCE", "CACHE_VERSION", "DEFAULT_TOL", "METHODS", "RULES", "SITES", "Attribution", "AttributionConfig",
    "Diagnostics", "InvalidAttributionError", "amig_baseline", "attribute", "attribute_with_diagnostics",
    "panel_nodes", "reference_rule", "attribute_attention", "attribute_attention_reference", "attribute_reference", "check_baseline",
    "check_batch_size", "check_scores", "knowledge_neurons", "knowledge_synapses", "path_nodes", "target_token",
    "tensor_digest",
]
