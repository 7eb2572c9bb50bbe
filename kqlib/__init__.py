"""kqlib: knowledge neurons and query localization for causal language models.

Core API::

    lm = kqlib.load("smollm2-135m")                  # or "gpt2", "meta-llama/Meta-Llama-3-8B", a directory
    scores = kqlib.attribute(lm, "The capital of France is", "Paris", method="ig")   # [n_layers, n_neurons]
    kns = kqlib.knowledge_neurons(scores, t=0.2)     # {(layer, neuron), ...}
"""

__version__ = "0.1.0"

from kqlib.errors import KqError  # noqa: E402
from kqlib.core.models import DEFAULT_MODEL, EMBEDDED, LM, load  # noqa: E402
from kqlib.attribution import (METHODS, AttributionConfig, amig_baseline, attribute, attribute_attention,  # noqa: E402
                               attribute_reference, knowledge_neurons)
from kqlib.runs.many import attribute_many  # noqa: E402
from kqlib.core import attention  # noqa: E402
from kqlib.core import hooks  # noqa: E402
