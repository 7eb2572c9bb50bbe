"""``kq bench --precision``: the staircase with bf16 weights against float32, where bf16 has matrix units.

The engine runs a model in the dtype it was loaded in. For a bf16 model only the decoder layers run in bf16
(weights, activations and their gradients): the head's softmax and its gradient stay float32
(:mod:`kqlib.attribution.head`) and the path integral is summed in float64 (:mod:`kqlib.attribution.engine`).
That is the careful mixed-precision version; a plain ``torch.autocast`` over the float32 engine casts back and
forth around every matmul instead.

Per embedded model, on ``n`` answered ParaRel queries, both dtypes run the same fixed rule (the same nodes, so
the difference is precision alone; :func:`kqlib.attribution.reference_rule` with ``steps`` points):

    error   = max |S_bf16 - S_f32| / max |S_f32|        (chapter 06's error measure)
    jaccard = |N_bf16 ∩ N_f32| / |N_bf16 ∪ N_f32|,  N = knowledge_neurons(S, 0.2)
    speed   = median s per attribution in float32 / in bf16

bf16 would be adopted only where it is faster and its error is <= ``tol`` on every query. The matmul GFLOP/s
of both dtypes on the same threads says what the hardware offers.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

import kqlib
from kqlib.attribution import attribute, knowledge_neurons, reference_rule
from kqlib.bench.converged import _queries, matmul_gflops
from kqlib.paper.path_points import jaccard

CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def bf16_hardware(cpuinfo: str | None = None) -> str | None:
    """What runs bf16 matmuls natively here: the CUDA device's name, the CPU's bf16 flags (``CPU_FLAGS`` in
    ``/proc/cpuinfo``), or None."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.cuda.get_device_name(0)
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    found = [f for f in CPU_FLAGS if f in flags]
    return "CPU " + ", ".join(found) if found else None


def compare(lm32, lm16, queries, *, steps: int = 16, tol: float = 1e-2) -> dict:
    """``lm32``/``lm16``: one model loaded in float32 and in bf16; ``queries``: ``[(prompt, target_id)]``.
    Returns per-query ``errors``, ``jaccards``, ``times32``, ``times16`` and their summary (module docstring)."""
    rule = reference_rule(lm32)
    attribute(lm32, queries[0][0], queries[0][1], rule=rule, steps=steps)  # warm-up: first-call buffers
    attribute(lm16, queries[0][0], queries[0][1], rule=rule, steps=steps)
    errors, jaccards, times32, times16 = [], [], [], []
    for i, (prompt, target) in enumerate(queries):
        order = (("f32", lm32), ("bf16", lm16))[::1 if i % 2 == 0 else -1]  # alternate which dtype runs first
        out = {}
        for name, lm in order:
            t0 = time.perf_counter()
            out[name] = (attribute(lm, prompt, target, rule=rule, steps=steps), time.perf_counter() - t0)
        (s32, t32), (s16, t16) = out["f32"], out["bf16"]
        s32, s16 = s32.double(), s16.double()
        errors.append(float((s16 - s32).abs().max() / s32.abs().max()))
        jaccards.append(jaccard(knowledge_neurons(s32, 0.2), knowledge_neurons(s16, 0.2)))
        times32.append(t32)
        times16.append(t16)
    s32, s16 = statistics.median(times32), statistics.median(times16)
    share_ok = sum(e <= tol for e in errors) / len(errors)
    return dict(rule=f"{rule}-{steps}", errors=errors, jaccards=jaccards, times32=times32, times16=times16,
                median_s32=s32, median_s16=s16, speed=s32 / s16, median_error=statistics.median(errors),
                max_error=max(errors), share_ok=share_ok, mean_jaccard=statistics.fmean(jaccards),
                adopt=share_ok == 1.0 and s32 / s16 > 1.0)


def report(models, n_queries: int = 10, steps: int = 16, tol: float = 1e-2) -> list[str]:
    """The printed lines: the hardware, both matmul rates, one row per model, and whether bf16 is adopted."""
    hardware = bf16_hardware()
    if hardware is None:
        return ["mixed precision: not measurable here: no bf16 matrix units (no "
                + " / ".join(CPU_FLAGS) + " in /proc/cpuinfo, no CUDA device with bf16)"]
    f32, b16 = matmul_gflops(dtype=torch.float32), matmul_gflops(dtype=torch.bfloat16)
    lines = [f"mixed precision: bf16 decoder layers (float32 head, float64 sums) against float32; bf16 units: "
             f"{hardware}; {torch.get_num_threads()} torch threads",
             f"matmul 1024x1024: float32 {f32:.1f} GFLOP/s, bf16 {b16:.1f} GFLOP/s ({b16 / f32:.2f}x)",
             f"{'model':<14} {'rule':<14} {'f32 s':>7} {'bf16 s':>7} {'speed':>6} {'median err':>11} "
             f"{'max err':>8} {'err<=tol':>9} {'KN Jaccard':>11}"]
    verdicts = []
    for model in models:
        lm32 = kqlib.load(model)
        lm16 = kqlib.load(model, dtype="bfloat16")
        r = compare(lm32, lm16, _queries(lm32, n_queries), steps=steps, tol=tol)
        lines.append(f"{model:<14} {r['rule']:<14} {r['median_s32']:>7.2f} {r['median_s16']:>7.2f} "
                     f"{r['speed']:>5.2f}x {r['median_error']:>11.3g} {r['max_error']:>8.3g} {r['share_ok']:>8.0%} "
                     f"{r['mean_jaccard']:>11.3f}")
        why = ("faster and within tol on every query" if r["adopt"] else
               "; ".join(w for w, bad in (("not faster", r["speed"] <= 1.0),
                                          (f"error > tol {tol:g} on {1 - r['share_ok']:.0%} of queries",
                                           r["share_ok"] < 1.0)) if bad))
        verdicts.append(f"{model}: bf16 {'ADOPTABLE' if r['adopt'] else 'NOT ADOPTED'} ({why})")
    return lines + [""] + verdicts
