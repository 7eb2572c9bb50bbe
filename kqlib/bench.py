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
import csv
import gc
import io
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field

from kqlib.core.threads import free_cores, usable_cores

IMPLEMENTATIONS = ("kqlib fast", "kqlib gauss-8", "kqlib fast 1-busy", "kqlib fast 1-busy all-threads",
                   "kqlib naive", "knowledge-neurons", "captum IG")
KN_INSTALL = "pip install --no-deps knowledge-neurons==0.0.2 einops"
CAPTUM_INSTALL = "pip install --no-deps captum==0.9.0"
REFERENCE_POINTS = 64  # Gauss-Legendre nodes of the reference integral (the "err vs integral" column)
# which kqlib scores a row's "max rel diff" / "top-5 agree" compare against: Captum is run with its
# Gauss-Legendre rule, so it is compared with kqlib's Gauss rule at the same number of points
COMPARED_WITH = {"captum IG": "kqlib gauss (same steps)"}

# 16 tokens with the word-level tokenizer below (punctuation is split off by the Whitespace pre-tokenizer).
GPT2_PROMPT = "The mother tongue of Jean Rouaud , who was born in Campbon in 1952 , is"
SMOLLM_PROMPT = "The native language of the writer Jean Rouaud is"
# a ParaRel-style prompt of ~16 tokens for the real models (P103, native language)
PARAREL_PROMPT = "Jean Rouaud, the French novelist who was born in Campbon in 1952, has the native language of"
# ~700 tokens: the memory case (the chunk budget must count the prompt length)
LONG_PROMPT = " ".join(["Jean Rouaud is a French writer born in Campbon, near Nantes, in 1952."] * 40) + \
    " The native language of Jean Rouaud is"


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``kind``: "gpt2-random" (a GPT-2 built from ``config`` with random weights and a
    word-level tokenizer) or "embedded" (``kqlib.load(model)``). ``target``: the answer string, or None for
    the model's own top-1 next token."""

    name: str
    kind: str
    prompt: str
    site: str
    target: str | None = None
    model: str | None = None
    config: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def supports_kn(self) -> bool:
        return self.kind == "gpt2-random" and self.site == "pre"


CASES = {
    "gpt2-random": Case("gpt2-random", "gpt2-random", GPT2_PROMPT, site="pre"),
    "smollm2-135m": Case("smollm2-135m", "embedded", PARAREL_PROMPT, site="post", target="French",
                         model="smollm2-135m"),
    "gemma3-270m": Case("gemma3-270m", "embedded", PARAREL_PROMPT, site="post", target="French",
                        model="gemma3-270m"),
    "smollm2-135m-700": Case("smollm2-135m-700", "embedded", LONG_PROMPT, site="post", target="French",
                             model="smollm2-135m"),
}
# the naive reference and the per-layer full-recompute tools would take hours on the 700-token prompt
SKIP = {("smollm2-135m-700", impl): "700-token prompt: fast path only (memory case)"
        for impl in IMPLEMENTATIONS if impl not in ("kqlib fast", "kqlib gauss-8")}

COLUMNS = ("case", "tokens", "implementation", "site", "steps", "s/query", "min-max s", "peak extra MiB",
           "max rel diff", "top-5 agree", "err vs integral", "kqlib fast x faster")


# ------------------------------------------------------------------------------------------ machine


def machine_info() -> dict:
    import torch

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
    import transformers

    try:
        from importlib.metadata import version

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


def build(case: Case):
    """``(model, tokenizer, target_id, target_string)`` for a case; the model is in eval mode."""
    import torch

    if case.kind == "gpt2-random":
        from tokenizers import pre_tokenizers
        from transformers import AutoModelForCausalLM, GPT2Config

        cfg = GPT2Config(**case.config)
        words = [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(case.prompt)]
        tok = word_level_tokenizer(words, cfg.vocab_size)
        torch.manual_seed(case.seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    elif case.kind == "embedded":
        import kqlib

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
        import kqlib

        target_id = kqlib.LM.wrap(model, tok).answer_token_ids(case.prompt, case.target)[0]
        target = tok.decode([target_id])
    return model, tok, target_id, target


# --------------------------------------------------------------------------------------- measure


def measure(case: Case, impl: str, steps: int, repeats: int, warmup: int = 1, verbose: bool = True,
            threads: int | None = None) -> dict:
    """Load the case's model, run ``impl`` ``warmup + repeats`` times; seconds, peak extra memory, scores.

    Meant to run in a fresh process (see :func:`run_benchmark`); in-process the memory figure also sees
    whatever earlier work left in the allocator."""
    import torch

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
        import kqlib

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
        from knowledge_neurons import KnowledgeNeurons

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
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=_busy_loop, daemon=True)
    proc.start()
    time.sleep(1.0)  # let it start spinning before the free cores are sampled
    return proc


def _captum_query(model, tok, case: Case, target_id: int, steps: int):
    """Captum's IntegratedGradients as a user would write it for neurons: per layer, a forward function whose
    input is the layer's neuron vector at the last position (zero baseline), the whole prompt recomputed."""
    import torch
    from captum.attr import IntegratedGradients

    import kqlib
    from kqlib.core.hooks import capture, set_neurons

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


def _measure_quiet_env(*args, **kwargs):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return measure(*args, **kwargs)


def captum_unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("captum") is not None else f"captum not installed: {CAPTUM_INSTALL}"


def kn_unavailable() -> str | None:
    """Why knowledge-neurons cannot run here, or None."""
    import importlib.util

    for mod in ("knowledge_neurons", "einops"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not installed: {KN_INSTALL}"
    return None


def _run_one(case, impl, steps, repeats, warmup, isolate, verbose, threads):
    if not isolate:
        return measure(case, impl, steps, repeats, warmup, verbose, threads)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(_measure_quiet_env, case, impl, steps, repeats, warmup, verbose, threads).result()


def _top(scores, k=5) -> set:
    import numpy as np

    flat = scores.reshape(-1)
    idx = np.argsort(-flat, kind="stable")[:k]
    return {divmod(int(i), scores.shape[1]) for i in idx}


def run_benchmark(cases, steps: int = 20, repeats: int = 3, warmup: int = 1, isolate: bool = True,
                  implementations=IMPLEMENTATIONS, verbose: bool = True, threads: int | None = None) -> list[dict]:
    """Measure every implementation on every case; one dict per (case, implementation) with :data:`COLUMNS`
    (``None`` where n/a, with the reason in ``"n/a"``) plus the raw ``"result"``.

    ``isolate``: run each implementation in a fresh spawned process (clean peak-memory figures)."""
    import numpy as np

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


# ---------------------------------------------------------------------------------------- output


def _cell(row: dict, col: str) -> str:
    v = row.get(col)
    if v is None:
        return "n/a" if col in ("s/query",) else "-"
    if col == "s/query":
        return f"{v:.3f}"
    if col == "min-max s":
        return f"{v[0]:.2f}-{v[1]:.2f}"
    if col == "peak extra MiB":
        return f"{v:.0f}"
    if col in ("max rel diff", "err vs integral"):
        return f"{v:.1e}"
    if col == "top-5 agree":
        return f"{v}/5"
    if col == "kqlib fast x faster":
        return f"{v:.1f}x"
    return str(v)


def table_rows(rows) -> list[list[str]]:
    out = []
    for row in rows:
        cells = [_cell(row, c) for c in COLUMNS]
        if row.get("n/a"):
            cells.append(f"n/a ({row['n/a']})")
        elif row.get("result", {}).get("note") or row.get("compared with"):
            cells.append("; ".join(v for v in (row["result"].get("note"), row.get("compared with") and
                                               f"diff vs {row['compared with']}") if v))
        else:
            cells.append("")
        out.append(cells)
    return out


def format_table(rows) -> str:
    header = list(COLUMNS) + ["note"]
    body = table_rows(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def format_markdown(rows) -> str:
    header = list(COLUMNS) + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in table_rows(rows)]
    return "\n".join(lines)


def format_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(COLUMNS) + ["note"])
    w.writerows(table_rows(rows))
    return buf.getvalue()


def verdicts(rows) -> list[str]:
    """The performance targets, each MET / NOT MET from this run's rows (measured side by side)."""
    out = []

    def say(text, ok):
        out.append(f"{text} -> {'MET' if ok else 'NOT MET'}")

    by = {(r["case"], r["implementation"]): r for r in rows}
    for row in rows:
        impl, case, x, diff = row["implementation"], row["case"], row.get("kqlib fast x faster"), row.get("max rel diff")
        if x is None:
            continue
        if impl == "knowledge-neurons":
            say(f"{case}: kqlib fast >= 20x faster than knowledge-neurons at <= 1e-4: {x:.1f}x at {diff:.1e}",
                x >= 20 and diff <= 1e-4)
        elif impl == "kqlib naive" and case != "gpt2-random":
            say(f"{case}: kqlib fast >= 25x faster than the naive reference at <= 1e-3: {x:.1f}x at {diff:.1e}",
                x >= 25 and diff <= 1e-3)
        elif impl == "kqlib gauss-8":
            fast = by.get((case, "kqlib fast"), {})
            if fast.get("err vs integral") is not None:
                say(f"{case}: gauss-8 at least as close to the integral as riemann-{row['steps']}: "
                    f"{row['err vs integral']:.1e} vs {fast['err vs integral']:.1e}",
                    row["err vs integral"] <= fast["err vs integral"])
        elif impl == "kqlib fast 1-busy":
            say(f"{case}: one busy competing process costs <= 2.2x: {x:.2f}x", x <= 2.2)
    for row in rows:
        if row["implementation"] == "kqlib fast" and row.get("peak extra MiB") is not None:
            say(f"{row['case']} ({row['tokens']} tokens): kqlib fast peak extra memory <= 1 GiB: "
                f"{row['peak extra MiB']:.0f} MiB", row["peak extra MiB"] <= 1024)
    return out


# ------------------------------------------------------------------------------------------- CLI


def _threads_arg(text: str) -> str:
    """argparse type of ``--threads``: ``auto`` or a positive integer (checked before any work)."""
    from kqlib.core.threads import parse_threads

    try:
        parse_threads(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kqlib.cli import int_at_least, output_file

    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated cases among {', '.join(CASES)} (default: all)")
    p.add_argument("--steps", type=int_at_least(2), default=None,
                   help="integrated-gradient path points (default 20; 4 with --quick)")
    p.add_argument("--repeats", type=int_at_least(1), default=None,
                   help="timed calls per implementation (default 3; 1 with --quick)")
    p.add_argument("--warmup", type=int_at_least(0), default=None,
                   help="untimed calls before them (default 1; 0 with --quick)")
    p.add_argument("--quick", action="store_true", help="CI smoke run: 1 repeat, no warm-up, 4 steps")
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
    from kqlib.errors import ParameterError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
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
    from kqlib.core.threads import parse_threads

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


def _register() -> None:
    from kqlib.cli import Command, register

    register(Command("bench", "benchmark kqlib's fast attribution vs the naive reference and knowledge-neurons",
                     add_arguments, run))


_register()

__all__ = ["CASES", "Case", "COLUMNS", "IMPLEMENTATIONS", "build", "measure", "run_benchmark", "format_table",
           "format_markdown", "format_csv", "verdicts", "machine_info"]
