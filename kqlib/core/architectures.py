"""Where each architecture family keeps its MLP neurons, attention and output head: one data table.

A *site* is a tensor inside every decoder layer that kqlib reads or patches. Neurons are the coordinates
of the MLP intermediate vector at one token position:

* ``"post"`` (default) -- the input of the MLP output projection, i.e. the real post-activation neuron
  (GPT-2: input of ``mlp.c_proj`` = GELU(c_fc(x)); Llama family: input of ``down_proj`` = act(gate)*up).
* ``"pre"`` -- what the knowledge-neuron code lineage hooks (GPT-2: output of ``mlp.c_fc``, pre-GELU;
  Llama family: output of ``gate_proj``, pre-activation, before the product with ``up_proj``).

To support a new family, add one :class:`Family` entry to :data:`FAMILIES` and a tiny-config test in
``tests/core/test_sites.py``; no other code needs to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kqlib.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Family:
    """Module paths of one architecture family, relative to the ``*ForCausalLM`` object or to a layer."""

    name: str
    model_types: tuple[str, ...]  # HF ``config.model_type`` values of this family
    layers: str  # path of the ModuleList of decoder layers, from the CausalLM
    final: tuple[str, ...]  # modules applied after the last layer, before the LM head (None entries skipped)
    attention: str  # attention module, from a layer
    # site name -> (module path from a layer, "input" | "output")
    neuron_sites: dict = field(default_factory=dict)
    out_proj: str = ""  # MLP output projection (its weight slice per neuron = the neuron's "value vector")
    out_proj_neuron_axis: int = 1  # nn.Linear [d_model, n]: axis 1; GPT-2 Conv1D [n, d_model]: axis 0
    tokens_flattened: bool = False  # OPT reshapes [batch, seq, d] to [batch*seq, d] before its MLP
    # how kqlib reaches the attention probabilities P: "" = through transformers' attention interface (kqlib
    # registers an eager function); else the path, from the attention module, of a module whose OUTPUT is P
    attention_probs_module: str = ""
    # a module path (from a layer) present only when BOTH sublayer outputs are RMS-normalised before the residual
    # add (Gemma2/3's "sandwich" norms; Gemma1 has no such module): then a path that scales a layer's neurons
    # (or attention row) from 0 changes the model only below a tiny alpha (scale invariance, see
    # kqlib.attribution.adaptive), so the adaptive rule integrates in log(alpha)
    output_norm_marker: str = ""


def _llama_like(name: str, model_types: tuple[str, ...], output_norm_marker: str = "") -> Family:
    return Family(
        name=name,
        model_types=model_types,
        layers="model.layers",
        final=("model.norm",),
        attention="self_attn",
        neuron_sites={"post": ("mlp.down_proj", "input"), "pre": ("mlp.gate_proj", "output")},
        out_proj="mlp.down_proj",
        out_proj_neuron_axis=1,
        output_norm_marker=output_norm_marker,
    )


FAMILIES: tuple[Family, ...] = (
    Family(
        name="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        final=("transformer.ln_f",),
        attention="attn",
        neuron_sites={"post": ("mlp.c_proj", "input"), "pre": ("mlp.c_fc", "output")},
        out_proj="mlp.c_proj",
        out_proj_neuron_axis=0,
    ),
    Family(
        name="gpt_neo",
        model_types=("gpt_neo",),
        layers="transformer.h",
        final=("transformer.ln_f",),
        attention="attn.attention",
        neuron_sites={"post": ("mlp.c_proj", "input"), "pre": ("mlp.c_fc", "output")},
        out_proj="mlp.c_proj",
        attention_probs_module="attn_dropout",  # GPT-Neo's own _attn applies it right after its softmax
    ),
    Family(
        name="gptj",
        model_types=("gptj",),
        layers="transformer.h",
        final=("transformer.ln_f",),
        attention="attn",
        neuron_sites={"post": ("mlp.fc_out", "input"), "pre": ("mlp.fc_in", "output")},
        out_proj="mlp.fc_out",
    ),
    Family(
        name="gpt_neox",
        model_types=("gpt_neox",),
        layers="gpt_neox.layers",
        final=("gpt_neox.final_layer_norm",),
        attention="attention",
        neuron_sites={"post": ("mlp.dense_4h_to_h", "input"), "pre": ("mlp.dense_h_to_4h", "output")},
        out_proj="mlp.dense_4h_to_h",
    ),
    Family(
        name="opt",
        model_types=("opt",),
        layers="model.decoder.layers",
        final=("model.decoder.final_layer_norm", "model.decoder.project_out"),
        attention="self_attn",
        neuron_sites={"post": ("fc2", "input"), "pre": ("fc1", "output")},
        out_proj="fc2",
        tokens_flattened=True,
    ),
    _llama_like("llama", ("llama", "mistral", "qwen2", "qwen3", "smollm3")),
    _llama_like("gemma", ("gemma", "gemma2", "gemma3_text"), output_norm_marker="post_feedforward_layernorm"),
)

SITE_NAMES = ("post", "pre")


def family_for(model_type: str) -> Family:
    """The table entry for a HF ``config.model_type``; a clear error when there is none."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in FAMILIES for t in f.model_types)
    raise UnsupportedArchitectureError(
        f"kqlib has no site entry for model_type={model_type!r}. Supported: {', '.join(known)}.\n"
        "To add one, append a Family(...) to kqlib/core/architectures.py:FAMILIES naming: the decoder-layer list "
        "(e.g. 'model.layers'), the modules after the last layer (final norm), the attention module of a "
        "layer, the MLP output projection (whose INPUT is the 'post' neuron site) and the module whose OUTPUT "
        "is the 'pre' site (e.g. 'mlp.gate_proj'); then add a tiny-config test in tests/core/test_sites.py."
    )


def get_module(root, path: str):
    """``get_module(model, "model.layers")`` -> the submodule; ``None`` if an attribute on the way is None."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
        if obj is None:
            return None
    return obj
