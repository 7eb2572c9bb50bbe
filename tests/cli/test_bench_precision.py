"""`kq bench --precision` plumbing: the bf16-hardware check and the float32-vs-bf16 comparison (no timings)."""

import torch

from kqlib.bench import precision
from tiny import tiny_lm

CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx512f {}\nbogomips\t: 1\n"


def test_bf16_hardware_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.bf16_hardware(CPUINFO.format("avx512_bf16")) == "CPU avx512_bf16"
    assert precision.bf16_hardware(CPUINFO.format("amx_bf16 amx_tile avx512_bf16")) == "CPU amx_bf16, avx512_bf16"
    assert precision.bf16_hardware(CPUINFO.format("avx512_vnni")) is None
    assert precision.bf16_hardware("") is None


def test_report_says_not_measurable_without_bf16_units(monkeypatch):
    monkeypatch.setattr(precision, "bf16_hardware", lambda: None)
    (line,) = precision.report(["smollm2-135m"], n_queries=1)
    assert line.startswith("mixed precision: not measurable here") and "avx512_bf16" in line


def test_compare_measures_the_bf16_error_against_float32():
    lm32 = tiny_lm("llama", seed=1)
    queries = [("the capital of france is", lm32.answer_token_ids("the capital of france is", "paris")[0]),
               ("the capital of germany is", lm32.answer_token_ids("the capital of germany is", "berlin")[0])]
    same = precision.compare(lm32, lm32, queries, steps=4)
    assert same["errors"] == [0.0, 0.0] and same["jaccards"] == [1.0, 1.0] and same["share_ok"] == 1.0
    lm16 = tiny_lm("llama", seed=1, dtype=torch.bfloat16)  # the same weights, rounded to bf16
    r = precision.compare(lm32, lm16, queries, steps=4, tol=1e-9)
    assert lm16.dtype == torch.bfloat16
    # bf16 rounding (8 bits of mantissa) moves the scores by far more than float32's, but not beyond recognition
    assert all(1e-4 < e < 0.5 for e in r["errors"]), r["errors"]
    assert r["share_ok"] == 0.0 and not r["adopt"]
    assert len(r["times32"]) == len(r["times16"]) == 2 and r["speed"] > 0
