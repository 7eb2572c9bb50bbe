"""``kq bench`` helpers: the machine it ran on, peak-memory readings (VmHWM after a clear_refs reset), and the
benchmark models (a GPT-2-sized word-level tokenizer; the cases' models)."""

from __future__ import annotations

import os
import platform
import resource
from importlib.metadata import version

import torch

import kqlib
from kqlib.core.hooks import capture, set_neurons


# ------------------------------------------------------------------------------------------ machine


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    import transformers  # heavy: transformers, not imported by `kq` at start

    try:
        kn = version("knowledge-neurons")
    except Exception:
        kn = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "usable cores": usable, "torch threads": torch.get_num_threads(),
            "load average": load, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "knowledge-neurons": kn}


# --------------------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------- models


def word_level_tokenizer(prompt_words: list[str], vocab_size: int):
    """A GPT-2-sized word-level tokenizer: the prompt's words, then generated words ``w00000``, ... up to
    ``vocab_size`` entries; id 0 is ``<|endoftext|>`` as in GPT-2. Callable like any HF tokenizer."""
    # heavy: tokenizers and transformers, only to build a benchmark model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>"]
    seen = set(words)
    for w in prompt_words:
        if w not in seen:
            seen.add(w)
            words.append(w)
    i = 0
    while len(words) < vocab_size:
        w = f"w{i:05d}"
        i += 1
        if w not in seen:
            words.append(w)
    vocab = {w: k for k, w in enumerate(words[:vocab_size])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")


def build(case):
    """``(model, tokenizer, target_id, target_string)`` for a case; the model is in eval mode."""
    if case.kind == "gpt2-random":
        # heavy: tokenizers and transformers, only to build a benchmark model
        from tokenizers import pre_tokenizers
        from transformers import AutoModelForCausalLM, GPT2Config

        cfg = GPT2Config(**case.config)
        words = [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(case.prompt)]
        tok = word_level_tokenizer(words, cfg.vocab_size)
        torch.manual_seed(case.seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    elif case.kind == "embedded":
        lm = kqlib.load(case.model, device="cpu")
        model, tok = lm.model, lm.tokenizer
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")
    ids = tok(case.prompt, return_tensors="pt").input_ids
    if case.target is None:
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[0, -1]
        target_id = int(logits.argmax())
        target = tok.convert_ids_to_tokens(target_id)
    else:
        target_id = kqlib.LM.wrap(model, tok).answer_token_ids(case.prompt, case.target)[0]
        target = tok.decode([target_id])
    return model, tok, target_id, target


def _captum_query(model, tok, case, target_id: int, steps: int):
    """Captum's IntegratedGradients as a user would write it for neurons: per layer, a forward function whose
    input is the layer's neuron vector at the last position (zero baseline), the whole prompt recomputed."""
    from captum.attr import IntegratedGradients  # optional: captum (the benchmark's "captum IG" rows)

    lm = kqlib.LM.wrap(model, tok, name=case.name)
    ids = tok(case.prompt, return_tensors="pt").input_ids

    def query():
        with torch.no_grad(), capture(lm, case.site) as acts:
            model(ids, use_cache=False)
        out = []
        for layer in range(lm.n_layers):
            def forward(x, layer=layer):
                with set_neurons(lm, layer, x, site=case.site):
                    logits = model(ids.expand(x.shape[0], -1), use_cache=False, logits_to_keep=1).logits[:, -1]
                return torch.softmax(logits.float(), -1)[:, target_id]

            a = acts[layer][:1]
            attr = IntegratedGradients(forward).attribute(a, baselines=torch.zeros_like(a), n_steps=steps,
                                                          method="gausslegendre", internal_batch_size=steps)
            out.append(attr[0])
        return torch.stack(out)

    return query
