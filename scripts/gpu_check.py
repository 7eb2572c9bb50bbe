"""One prepared CUDA check of the fast attribution path (issue: attribution at the hardware floor, §5).

Where a CUDA GPU is present:

1. exactness: kqlib's fast path == its plain full-recompute reference on a randomly initialised
   Llama-3-8B-shaped model (full width: d 4096, 14336 neurons, 32 heads / 8 kv heads, vocab 128256; ``--layers``
   decoder layers), in fp32 (TF32 off) and in bf16 (bf16 weights; fp32 head and gradient accumulation);
2. speed and memory: seconds per query (median of ``--repeats`` after a warm-up) and peak GPU memory for
   ``--steps`` path points on a 16-token prompt, fp32 and bf16.

    python scripts/gpu_check.py                       # on a GPU machine (prints a Markdown table)
    python scripts/gpu_check.py --device cpu --tiny   # the same code path on a tiny shape (what CI runs)

Without CUDA (and without ``--device cpu``) it says so and exits 0: CI never depends on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

PROMPT = "The mother tongue of Jean Rouaud , who was born in Campbon in 1952 , is"  # 16 word-level tokens
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                 vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192)
TINY = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, vocab_size=2048,
            max_position_embeddings=256)


def build(device: str, layers: int, shape: dict, dtype: torch.dtype):
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig

    import kqlib
    from kqlib.bench.suite import word_level_tokenizer

    cfg = LlamaConfig(num_hidden_layers=layers, **shape)
    words = [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(PROMPT)]
    tok = word_level_tokenizer(words, cfg.vocab_size)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=dtype).eval()
    lm = kqlib.LM.wrap(model, tok, name=f"llama3-8b-shape-{layers}L-{str(dtype).replace('torch.', '')}")
    with torch.no_grad():
        target = int(model(lm.encode(PROMPT), use_cache=False).logits[0, -1].float().argmax())
    return lm, target


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int):
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return out, statistics.median(times), peak


def rel(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def top5(s) -> set:
    return set(torch.topk(s.flatten().float(), 5).indices.tolist())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="tiny width instead of Llama-3-8B's (CPU smoke run)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check.")
        return 0
    import kqlib

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shape = TINY if args.tiny else LLAMA3_8B
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"gpu_check on {name}; torch {torch.__version__}; {args.layers} layers; {args.steps} steps")
    rows, ok, fp32_scores = [], True, None
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        lm, target = build(args.device, args.layers, shape, dtype)
        ref = kqlib.attribute_reference(lm, PROMPT, target, steps=args.steps)
        fast, seconds, peak = timed(lambda: kqlib.attribute(lm, PROMPT, target, steps=args.steps), args.device,
                                    args.repeats)
        _, ref_seconds, ref_peak = timed(lambda: kqlib.attribute_reference(lm, PROMPT, target, steps=args.steps),
                                         args.device, 1)
        diff = rel(fast, ref)
        if dtype == torch.float32:
            fp32_scores = fast
        vs_fp32 = rel(fast, fp32_scores)
        good = diff <= tol and bool(torch.isfinite(fast).all())
        ok &= good
        rows.append((str(dtype).replace("torch.", ""), len(lm.encode(PROMPT)[0]), seconds, peak, ref_seconds, ref_peak,
                     diff, len(top5(fast) & top5(ref)), vs_fp32, "ok" if good else f"FAIL (> {tol:g})"))
        del lm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print("| dtype | tokens | fast s/query | fast peak MiB | reference s/query | reference peak MiB | "
          "max rel diff fast vs reference | top-5 agree | max rel diff vs fp32 fast | check |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.0f} | {r[4]:.3f} | {r[5]:.0f} | {r[6]:.1e} | {r[7]}/5 | "
              f"{r[8]:.1e} | {r[9]} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
