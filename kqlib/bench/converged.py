"""``kq bench --converged``: time to a converged attribution, kernel efficiency and memory, with targets.

* **Time to converged** (per embedded model, ``n`` answered ParaRel queries under the book's answer filter):
  the error of a rule on a query is ``max |scores - ref| / max |ref|`` against Gauss–Legendre ``reference``
  points. Rows: ``adaptive`` (``tol``), ``riemann-20`` (the paper's rule), the smallest ``gauss-N`` and
  ``riemann-N`` (N in ``COUNTS``) whose error is <= tol on every query, and Captum's Gauss–Legendre IG at that
  Gauss N. Targets: adaptive's median time <= 1.0x riemann-20's, error <= tol on >= 95 % of queries, and
  >= 2x faster than the smallest fixed Gauss rule meeting tol on all queries.
* **Kernel efficiency**: FLOPs counted from the shapes of the rows the staircase ran (:func:`staircase_flops`)
  per second of the adaptive attributions, against torch's float32 matmul in the same process and threads
  (:func:`matmul_gflops`). Target >= 60 %.
* **Memory**: peak RSS above the loaded model (after one short warm-up attribution) during one adaptive
  attribution of a ~3,000-token prompt (``/proc/self/status`` VmHWM after a reset). Target <= 1 GiB.
"""

from __future__ import annotations

import statistics
import time

import torch

import kqlib
from kqlib.attribution import attribute, attribute_with_diagnostics, reference_rule
from kqlib.bench.cases import LONG_PROMPT, Case
from kqlib.bench.machine import _captum_query, _peak_bytes, _reset_peak, _rss_bytes
from kqlib.paper import pararel

COUNTS = (8, 12, 16, 24, 32, 48, 64)
RELATIONS = ("P36", "P1376", "P103", "P1412", "P176", "P178", "P30", "P27")


def matmul_gflops(n: int = 1024, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """torch ``[n, n] @ [n, n]`` GFLOP/s in ``dtype`` (best of ``repeats``) on the current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def staircase_flops(lm, n_tokens: int, points: list[int]) -> float:
    """FLOPs of the rows an attribution ran, from the shapes: a row starting at layer l runs layers l..L-1
    forward and backward, and the fused head (2 matmuls over the vocabulary, forward only). Per row and layer:
    the weight matmuls 2 x (weight count) forward and the same backward (the weights are frozen: only the
    gradient of the input is computed, no weight gradient), the attention products 4 x d_attention x T forward
    and twice that backward (scores and values, each with two gradients). An upper bound by a few per cent: rows
    that start at the lowest layer of their chunk skip most of that layer's backward. Checked against torch's
    FLOP counter on tiny models (``tests/cli/test_bench_converged.py``)."""
    cfg = lm.model.config.get_text_config() if hasattr(lm.model.config, "get_text_config") else lm.model.config
    layer = lm.layer(0)
    weights = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    per_layer = 2 * (2 * weights) + 3 * (4 * heads * head_dim * n_tokens)
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    head = 2 * 2 * vocab * cfg.hidden_size
    L = lm.n_layers
    return float(sum(k * (per_layer * (L - l) + head) for l, k in enumerate(points)))


def _queries(lm, n: int, seed: int = 0):
    ds = pararel.build_dataset(lm, list(RELATIONS), 3, seed=seed, min_correct=2, progress=False).with_queries("correct")
    return [(q.prompt, q.target_id) for q in ds.queries][:n]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def converged_rows(model: str, n_queries: int = 10, tol: float = 1e-2, reference: int = 128,
                   counts=COUNTS, captum: bool = True) -> tuple[list[dict], dict]:
    """Rows ``{model, rule, median s, median error, share <= tol, points}`` and the efficiency numbers."""
    lm = kqlib.load(model)
    queries = _queries(lm, n_queries)
    err = lambda s, r: float((s.double() - r.double()).abs().max() / r.double().abs().max())  # noqa: E731
    refs = [attribute(lm, p, t, rule=reference_rule(lm), steps=reference) for p, t in queries]
    results: dict[str, dict] = {}

    def run_rule(label, fn):
        times, errs, pts = [], [], []
        for (p, t), ref in zip(queries, refs):
            out, dt = _timed(lambda: fn(p, t))
            scores, n_pts = out
            times.append(dt)
            errs.append(err(scores, ref))
            pts.append(n_pts)
        results[label] = dict(model=model, rule=label, median_s=statistics.median(times), errors=errs,
                              median_error=statistics.median(errs), share_ok=sum(e <= tol for e in errs) / len(errs),
                              points=statistics.median(pts), times=times)

    flops = []

    def adaptive(p, t):
        r = attribute_with_diagnostics(lm, p, t, rule="adaptive", tol=tol, diagnostics=False)
        flops.append(staircase_flops(lm, len(lm.encode(p)[0]), r.diagnostics.points))
        return r.scores, r.diagnostics.total_points

    run_rule(f"adaptive tol {tol:g}", adaptive)
    run_rule("riemann-20", lambda p, t: (attribute(lm, p, t, steps=20), 20 * lm.n_layers))
    smallest = {}
    for rule in ("gauss", "riemann") + (("gauss-log",) if lm.normalized_outputs else ()):
        for n in counts:
            label = f"{rule}-{n}"
            run_rule(label, lambda p, t, n=n, rule=rule: (attribute(lm, p, t, rule=rule, steps=n), n * lm.n_layers))
            if results[label]["share_ok"] == 1.0:
                smallest[rule] = n
                break
            if n != counts[-1]:
                results.pop(label)  # keep only the smallest rule meeting tol (or the largest tried)
    if captum and "gauss" in smallest:
        n = smallest["gauss"]

        def cap(p, t):
            q = _captum_query(lm.model, lm.tokenizer, Case("c", "embedded", p, site="post"), t, n)
            return q().float(), n * lm.n_layers

        run_rule(f"captum gauss-{n}", cap)
    a = results[f"adaptive tol {tol:g}"]
    efficiency = dict(gflops=sum(flops) / sum(a["times"]) / 1e9, peak=matmul_gflops())
    return list(results.values()), dict(efficiency, smallest=smallest, riemann20=results["riemann-20"], adaptive=a)


def memory_row(model: str = "smollm2-135m", n_tokens: int = 3000, tol: float = 1e-2) -> dict:
    """Peak RSS above the loaded model during one adaptive attribution of a ~``n_tokens`` prompt."""
    lm = kqlib.load(model)
    unit = LONG_PROMPT.rsplit(" The native", 1)[0] + " "
    reps = max(1, n_tokens // max(1, len(lm.encode(unit)[0])))
    prompt = unit * reps + "The native language of Jean Rouaud is"
    tokens = len(lm.encode(prompt)[0])
    # "loaded" = after a first short attribution: the first forward pass faults in lazily mapped weights and
    # torch's one-time buffers (about 0.5 GB on SmolLM2 here), which no prompt length changes
    kqlib.attribute(lm, "The capital of France is", " Paris", steps=1)
    base = _rss_bytes()
    exact = _reset_peak()
    kqlib.attribute(lm, prompt, " French", rule="adaptive", tol=tol)
    return dict(model=model, tokens=tokens, extra_bytes=_peak_bytes() - base, exact=exact)


def report(models, n_queries: int, reference: int, counts, tol: float = 1e-2, memory_tokens: int = 3000,
           captum: bool = True) -> list[str]:
    """The printed lines: one row per (model, rule), the targets as MET / NOT MET, efficiency and memory."""
    lines = [f"time to converged: {n_queries} answered ParaRel queries per model, error = max|s - ref| / max|ref| "
             f"against Gauss–Legendre {reference} (in log(alpha) where the layers' outputs are normalised: "
             f"Gemma2/3); tol {tol:g}",
             f"{'model':<14} {'rule':<18} {'median s':>9} {'median err':>11} {'err<=tol':>9} {'points':>7}"]
    targets = []
    for model in models:
        rows, info = converged_rows(model, n_queries, tol, reference, counts, captum)
        for r in rows:
            lines.append(f"{model:<14} {r['rule']:<18} {r['median_s']:>9.2f} {r['median_error']:>11.3g} "
                         f"{r['share_ok']:>8.0%} {r['points']:>7.0f}")
        a, r20 = info["adaptive"], info["riemann20"]
        ratio = a["median_s"] / r20["median_s"]
        targets.append(f"{model}: adaptive median time / riemann-20 = {ratio:.2f} (target <= 1.0): "
                       f"{'MET' if ratio <= 1.0 else 'NOT MET'}")
        targets.append(f"{model}: adaptive error <= tol on {a['share_ok']:.0%} of queries (target >= 95 %): "
                       f"{'MET' if a['share_ok'] >= 0.95 else 'NOT MET'}")
        g = info["smallest"].get("gauss")
        label = f"gauss-{g if g is not None else max(counts)}"
        row = next(r for r in rows if r["rule"] == label)
        speed = row["median_s"] / a["median_s"]
        which = "smallest meeting tol on all" if g is not None else "none up to it meets tol on all: a lower bound"
        targets.append(f"{model}: adaptive x faster than {label} ({which}) = {speed:.2f} (target >= 2): "
                       f"{'MET' if speed >= 2 else 'NOT MET'}")
        if "riemann" not in info["smallest"]:
            targets.append(f"{model}: no riemann-N (N <= {max(counts)}) meets tol on every query")
        share = info["gflops"] / info["peak"]
        targets.append(f"{model}: kernel efficiency {info['gflops']:.1f} GFLOP/s (shapes) / float32 matmul "
                       f"{info['peak']:.1f} GFLOP/s = {share:.0%} (target >= 60 %): {'MET' if share >= 0.6 else 'NOT MET'}")
    mem = memory_row(models[0], memory_tokens, tol)
    gib = mem["extra_bytes"] / 2 ** 30
    targets.append(f"{mem['model']}: memory above the loaded model, adaptive, {mem['tokens']} tokens: {gib:.2f} GiB "
                   f"(target <= 1 GiB{'' if mem['exact'] else '; peak not resettable: an upper bound'}): "
                   f"{'MET' if gib <= 1 else 'NOT MET'}")
    return lines + [""] + targets
