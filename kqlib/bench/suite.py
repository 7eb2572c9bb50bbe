"""``kq bench``: kqlib's fast attribution vs its naive reference vs EleutherAI's ``knowledge-neurons``.

A benchmark, not a test: for every case it prints one row per implementation with

* seconds per query: median over ``--repeats`` timed calls after ``--warmup`` untimed ones (one query =
  the scores of every neuron in every layer for one prompt and target token, ``--steps`` path points);
* peak extra memory: each implementation runs in a fresh process (``multiprocessing`` "spawn") that loads
  the model, resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` <- 5) and reports
  ``VmHWM - RSS after load`` from ``/proc/self/status`` at the end (no tracemalloc: it misses torch's
  allocations). Where the reset is refused it falls back to ``ru_maxrss - RSS after load`` (an upper bound,
  model-load transients included) and says so;
* max |score - kqlib fast| / max |kqlib fast| and the overlap of the top-5 neurons with kqlib fast;
* how many times faster kqlib fast is than the row's implementation.

Cases: ``gpt2-random`` (``GPT2Config()`` defaults: 12 layers, d 768, 3072 neurons, vocab 50,257; random
init with seed 0; a word-level tokenizer over generated words since no hub is reachable; a 16-token prompt;
target = the model's own top-1 next token) at the ``"pre"`` site, the output of ``mlp.c_fc`` that
knowledge-neurons hooks; ``smollm2-135m`` (embedded, real weights) at the ``"post"`` site, where
knowledge-neurons is n/a (it supports only BERT, GPT-2 and GPT-Neo).

knowledge-neurons (PyPI 0.0.2) is not a kqlib dependency: ``make bench`` installs it with
``pip install --no-deps knowledge-neurons==0.0.2 einops``. It encodes the target with
``tokenizer.encode(ground_truth)`` (no space is prepended, and only a one-token target works with GPT-2
models), so the benchmark passes it the target token's own string and checks that it encodes to exactly the
token id kqlib is given. Its model is used as a user would have it: ``model.eval()``, parameters still
requiring grad (it never turns them off), eager attention like kqlib's; its ``batch_size`` is set to
``steps`` (all path points of a layer in one batch, the same batching as kqlib's naive reference).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

import kqlib
from kqlib.bench import converged, precision
from kqlib.cli_args import Command, int_at_least, output_file
from kqlib.core.threads import free_cores, parse_threads, usable_cores
from kqlib.errors import ParameterError

from kqlib.bench.machine import (  # noqa: E402,F401 (re-exported)
    machine_info, _rss_bytes, _reset_peak, _peak_bytes, word_level_tokenizer, build, _captum_query)
from kqlib.bench.report import (  # noqa: E402,F401 (re-exported)
    _cell, table_rows, format_table, format_markdown, format_csv, verdicts)

from kqlib.bench.cases import (  # noqa: E402,F401 (re-exported)
    Case, IMPLEMENTATIONS, KN_INSTALL, CAPTUM_INSTALL, REFERENCE_POINTS, COMPARED_WITH, GPT2_PROMPT, SMOLLM_PROMPT, PARAREL_PROMPT, LONG_PROMPT, CASES, SKIP, COLUMNS)


# --------------------------------------------------------------------------------------- measure


def measure(case: Case, impl: str, steps: int, repeats: int, warmup: int = 1, verbose: bool = True,
            threads: int | None = None) -> dict:
    """Load the case's model, run ``impl`` ``warmup + repeats`` times; seconds, peak extra memory, scores.

    Meant to run in a fresh process (see :func:`run_benchmark`); in-process the memory figure also sees
    whatever earlier work left in the allocator."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if threads:
        torch.set_num_threads(threads)
    tag = f"[bench] {case.name} / {impl}:"
    t0 = time.perf_counter()
    model, tok, target_id, target = build(case)
    ids = tok(case.prompt, return_tensors="pt").input_ids
    note = ""
    busy = None
    extras: dict = {}
    if impl.startswith("kqlib"):
        lm = kqlib.LM.wrap(model, tok, name=case.name)
        if "busy" in impl:  # one competing busy process for the whole measurement
            busy = _start_busy()
            n = free_cores() if impl == "kqlib fast 1-busy" else usable_cores()
            torch.set_num_threads(n)
            note = f"{n} torch thread(s){' (free cores, sampled)' if n != usable_cores() else ''}"
        if impl == "kqlib naive":
            def query():
                return kqlib.attribute_reference(lm, case.prompt, target_id, steps=steps, site=case.site)
        elif impl == "kqlib gauss-8":
            note = "rule=gauss, 8 points"

            def query():
                return kqlib.attribute(lm, case.prompt, target_id, steps=8, rule="gauss", site=case.site)
        else:
            def query():
                return kqlib.attribute(lm, case.prompt, target_id, steps=steps, site=case.site)
        if impl == "kqlib fast":  # untimed: the scores other rows are compared with
            def extra():
                extras["kqlib gauss (same steps)"] = kqlib.attribute(lm, case.prompt, target_id, steps=steps,
                                                                     rule="gauss", site=case.site)
                extras["integral"] = kqlib.attribute(lm, case.prompt, target_id, steps=REFERENCE_POINTS,
                                                     rule="gauss", site=case.site)
    elif impl == "knowledge-neurons":
        if not case.supports_kn:
            raise NotImplementedError("knowledge-neurons supports only GPT-2/GPT-Neo/BERT at the c_fc output")
        from knowledge_neurons import KnowledgeNeurons  # optional: knowledge-neurons (its benchmark rows)

        kn_ids = tok.encode(target)
        if kn_ids != [target_id]:
            raise ValueError(f"knowledge-neurons would encode the target {target!r} as {kn_ids}, not [{target_id}]")
        kn = KnowledgeNeurons(model, tok, model_type="gpt2", device="cpu")
        note = f"batch_size={steps}"

        def query():
            return kn.get_scores(case.prompt, target, batch_size=steps, steps=steps, pbar=False)
    elif impl == "captum IG":
        query = _captum_query(model, tok, case, target_id, steps)
        note = f"IntegratedGradients per layer, gausslegendre, internal_batch_size={steps}"
    else:
        raise ValueError(f"unknown implementation {impl!r}; one of {IMPLEMENTATIONS}")
    gc.collect()
    rss0 = _rss_bytes()
    reset = _reset_peak()
    if verbose:
        print(f"{tag} model ready in {time.perf_counter() - t0:.1f} s, RSS {rss0 / 2**20:.0f} MiB, "
              f"{ids.shape[1]} prompt tokens, target id {target_id} ({target!r})", flush=True)
    times = []
    scores = None
    for k in range(warmup + repeats):
        t = time.perf_counter()
        scores = query()
        dt = time.perf_counter() - t
        if k >= warmup:
            times.append(dt)
        if verbose:
            label = "warm-up" if k < warmup else f"run {k - warmup + 1}/{repeats}"
            print(f"{tag} {label}: {dt:.2f} s", flush=True)
    peak = _peak_bytes() - rss0
    if busy is not None:
        busy.terminate()
        busy.join()
    if impl == "kqlib fast":
        extra()
    return {
        "times": times,
        "peak_extra_bytes": max(0, peak),
        "memory_method": "VmHWM after clear_refs reset" if reset else "ru_maxrss (reset refused: upper bound)",
        "scores": scores.detach().double().cpu().numpy(),
        "target_id": target_id,
        "target": target,
        "tokens": int(ids.shape[1]),
        "threads": torch.get_num_threads(),
        "note": note,
        "extras": {k: v.detach().double().cpu().numpy() for k, v in extras.items()},
    }


def _busy_loop() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _start_busy():
    proc = multiprocessing.get_context("spawn").Process(target=_busy_loop, daemon=True)
    proc.start()
    time.sleep(1.0)  # let it start spinning before the free cores are sampled
    return proc


def _measure_quiet_env(*args, **kwargs):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return measure(*args, **kwargs)


def captum_unavailable() -> str | None:
    return None if importlib.util.find_spec("captum") is not None else f"captum not installed: {CAPTUM_INSTALL}"


def kn_unavailable() -> str | None:
    """Why knowledge-neurons cannot run here, or None."""
    for mod in ("knowledge_neurons", "einops"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not installed: {KN_INSTALL}"
    return None


def _run_one(case, impl, steps, repeats, warmup, isolate, verbose, threads):
    if not isolate:
        return measure(case, impl, steps, repeats, warmup, verbose, threads)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(_measure_quiet_env, case, impl, steps, repeats, warmup, verbose, threads).result()


def _top(scores, k=5) -> set:
    flat = scores.reshape(-1)
    idx = np.argsort(-flat, kind="stable")[:k]
    return {divmod(int(i), scores.shape[1]) for i in idx}


def run_benchmark(cases, steps: int = 20, repeats: int = 3, warmup: int = 1, isolate: bool = True,
                  implementations=IMPLEMENTATIONS, verbose: bool = True, threads: int | None = None) -> list[dict]:
    """Measure every implementation on every case; one dict per (case, implementation) with :data:`COLUMNS`
    (``None`` where n/a, with the reason in ``"n/a"``) plus the raw ``"result"``.

    ``isolate``: run each implementation in a fresh spawned process (clean peak-memory figures)."""
    rows = []
    for case in cases:
        results: dict[str, dict | str] = {}
        for impl in implementations:
            if (case.name, impl) in SKIP or (impl == "captum IG" and captum_unavailable()):
                results[impl] = SKIP.get((case.name, impl)) or captum_unavailable()
                continue
            if impl == "knowledge-neurons":
                why = kn_unavailable() or (None if case.supports_kn else
                                           "supports only BERT/GPT-2/GPT-Neo (c_fc output site)")
                if why:
                    results[impl] = why
                    if verbose:
                        print(f"[bench] {case.name} / {impl}: n/a ({why})", flush=True)
                    continue
            if verbose:
                print(f"[bench] {case.name} / {impl}: starting ({'fresh process' if isolate else 'in-process'})",
                      flush=True)
            try:
                results[impl] = _run_one(case, impl, steps, repeats, warmup, isolate, verbose, threads)
            except Exception as exc:  # a failing implementation is a row with its reason, not a crash
                results[impl] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                if verbose:
                    print(f"[bench] {case.name} / {impl}: failed: {results[impl]}", flush=True)
        fast = results.get("kqlib fast")
        fast_ok = isinstance(fast, dict)
        integral = fast["extras"]["integral"] if fast_ok else None
        tokens = next((r["tokens"] for r in results.values() if isinstance(r, dict)), None)
        for impl in implementations:
            r = results.get(impl)
            row = dict.fromkeys(COLUMNS)
            row.update(case=case.name, tokens=tokens, implementation=impl, site=case.site, steps=steps)
            if not isinstance(r, dict):
                row["n/a"] = r or "not run"
                rows.append(row)
                continue
            med = statistics.median(r["times"])
            row["s/query"] = med
            row["min-max s"] = (min(r["times"]), max(r["times"]))
            row["peak extra MiB"] = r["peak_extra_bytes"] / 2**20
            if fast_ok:
                if r["target_id"] != fast["target_id"]:
                    row["n/a"] = f"target id {r['target_id']} != kqlib fast's {fast['target_id']}"
                else:
                    against = COMPARED_WITH.get(impl)
                    ref = fast["extras"][against] if against else fast["scores"]
                    denom = float(np.abs(ref).max()) or 1.0
                    row["max rel diff"] = float(np.abs(r["scores"] - ref).max()) / denom
                    row["top-5 agree"] = len(_top(r["scores"]) & _top(ref))
                    row["err vs integral"] = float(np.abs(r["scores"] - integral).max()) / (
                        float(np.abs(integral).max()) or 1.0)
                    row["kqlib fast x faster"] = med / statistics.median(fast["times"])
                    if against:
                        row["compared with"] = against
            row["result"] = r
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- CLI


def _threads_arg(text: str) -> str:
    """argparse type of ``--threads``: ``auto`` or a positive integer (checked before any work)."""
    try:
        parse_threads(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:

    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated cases among {', '.join(CASES)} (default: all)")
    p.add_argument("--steps", type=int_at_least(2), default=None,
                   help="integrated-gradient path points (default 20; 4 with --quick)")
    p.add_argument("--repeats", type=int_at_least(1), default=None,
                   help="timed calls per implementation (default 3; 1 with --quick)")
    p.add_argument("--warmup", type=int_at_least(0), default=None,
                   help="untimed calls before them (default 1; 0 with --quick)")
    p.add_argument("--quick", action="store_true", help="CI smoke run: 1 repeat, no warm-up, 4 steps")
    p.add_argument("--converged", action="store_true",
                   help="time-to-converged (adaptive vs fixed rules, 10 ParaRel queries per embedded model), kernel "
                        "efficiency and memory rows with their targets; with --quick: 2 queries, gauss-64 reference")
    p.add_argument("--precision", action="store_true",
                   help="bf16 decoder layers against float32 in the staircase (same nodes; 10 ParaRel queries per "
                        "embedded model), where the CPU or GPU has bf16 matrix units; with --quick: 2 queries")
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                   help="comma-separated subset of: " + ", ".join(IMPLEMENTATIONS))
    p.add_argument("--threads", type=_threads_arg, default=None,
                   help="torch threads in each worker: a number or 'auto' (the cores free now; default: torch's "
                        "default, one per core); the busy-process rows choose their own")
    p.add_argument("--in-process", action="store_true",
                   help="run every implementation in this process (faster start, less clean memory figures)")
    p.add_argument("--out", default=None, type=output_file((".csv", ".md")),
                   help="also write the table to this file: CSV if it ends in .csv, Markdown if .md")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if getattr(args, "converged", False):
        print("machine: " + "; ".join(f"{k} {v}" for k, v in machine_info().items()), flush=True)
        quick = args.quick
        for line in converged.report(["smollm2-135m"] if quick else ["smollm2-135m", "gemma3-270m"],
                                     n_queries=2 if quick else 10, reference=64 if quick else 128,
                                     counts=(8, 16, 32) if quick else converged.COUNTS,
                                     memory_tokens=1000 if quick else 3000):
            print(line, flush=True)
        return 0
    if getattr(args, "precision", False):
        print("machine: " + "; ".join(f"{k} {v}" for k, v in machine_info().items()), flush=True)
        models = ["smollm2-135m"] if args.quick else ["smollm2-135m", "gemma3-270m"]
        for line in precision.report(models, n_queries=2 if args.quick else 10):
            print(line, flush=True)
        return 0
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise ParameterError(f"unknown case(s) {unknown}; choose among {', '.join(CASES)}")
    impls = [i.strip() for i in args.implementations.split(",") if i.strip()]
    if any(i not in IMPLEMENTATIONS for i in impls) or "kqlib fast" not in impls:
        raise ParameterError(f"implementations must include 'kqlib fast' and be among {IMPLEMENTATIONS}")
    steps = args.steps if args.steps is not None else (4 if args.quick else 20)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if steps < 1 or repeats < 1 or warmup < 0:
        raise ParameterError("need --steps >= 1, --repeats >= 1, --warmup >= 0")
    args.threads = parse_threads(args.threads)
    info = machine_info()
    if args.threads:
        info["torch threads"] = f"{args.threads} in workers (--threads; default here {info['torch threads']})"
    print("kq bench: seconds per query = median of %d timed call(s) after %d warm-up; %d IG steps" %
          (repeats, warmup, steps))
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    t0 = time.perf_counter()
    rows = run_benchmark([CASES[n] for n in names], steps=steps, repeats=repeats, warmup=warmup,
                         isolate=not args.in_process, implementations=impls, threads=args.threads)
    methods = {r["result"]["memory_method"] for r in rows if r.get("result")}
    threads = {r["result"]["threads"] for r in rows if r.get("result")}
    targets = {r["case"]: (r["result"]["target"], r["result"]["target_id"]) for r in rows if r.get("result")}
    print()
    print(format_table(rows))
    print()
    print("targets: " + "; ".join(f"{c}: {t!r} (id {i})" for c, (t, i) in targets.items()))
    print(f"peak extra memory: {'fresh spawned process per implementation' if not args.in_process else 'in-process'}"
          f", {', '.join(sorted(methods)) or '-'}, minus RSS after model load; torch threads in workers: "
          f"{', '.join(map(str, sorted(threads))) or '-'}")
    print("max rel diff = max|scores - kqlib fast| / max|kqlib fast|; top-5 agree = shared top-5 neurons "
          "with kqlib fast; kqlib fast x faster = this row's s/query / kqlib fast's")
    for v in verdicts(rows):
        print(v)
    print(f"total wall time {time.perf_counter() - t0:.0f} s; load average now "
          f"{'%.2f %.2f %.2f' % os.getloadavg()}")
    if args.out:
        text = format_csv(rows) if args.out.endswith(".csv") else (
            "machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "\n\n" + format_markdown(rows) + "\n")
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    return 0


BENCH = Command("bench", "benchmark kqlib's fast attribution vs the naive reference and knowledge-neurons",
                 add_arguments, run)

__all__ = ["CASES", "Case", "COLUMNS", "IMPLEMENTATIONS", "build", "measure", "run_benchmark", "format_table",
           "format_markdown", "format_csv", "verdicts", "machine_info"]
