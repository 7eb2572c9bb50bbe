"""Attribute many queries: cached on disk, with progress and ETA, resumable after an interruption."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Iterable

import torch

from kqlib.attribution import (AttributionConfig, Diagnostics, amig_baseline, attribute_attention,
                               attribute_with_diagnostics, check_baseline, check_batch_size, target_token)
from kqlib.attribution.config import SYNAPSE_METHOD
from kqlib.core import models
from kqlib.core import threads as thread_counts
from kqlib.errors import ParameterError
from kqlib.runs.cache import AttributionCache
from kqlib.runs.progress import Progress
from kqlib.runs.queries import query_prompt_target
from kqlib.runs.ray_pool import attribute_many_ray


RESAMPLE_S = 10.0  # threads="auto": seconds between two looks at the free cores


def _thread_picker(threads):
    """A function to call before each query: sets torch's threads per ``threads`` (see :func:`attribute_many`)."""
    if threads is None:
        return lambda: None
    auto = isinstance(threads, str) and threads.strip().lower() == "auto"
    n = thread_counts.parse_threads(threads)  # refuses a bad value before any work
    torch.set_num_threads(n)
    if not auto:
        return lambda: None
    last = [time.monotonic()]

    def pick():
        if time.monotonic() - last[0] >= RESAMPLE_S:
            torch.set_num_threads(thread_counts.free_cores(interval=0.1))
            last[0] = time.monotonic()

    return pick


def attribute(lm, prompt: str, target, config: AttributionConfig, *, batch_size=None, baseline=None):
    """One query under ``config``: ``(scores, diagnostics)``; the one place :func:`attribute_many` computes.
    Neurons: :func:`kqlib.attribution.attribute_with_diagnostics` (``[L, N]``); knowledge synapses
    (``config.method == "attention-ig"``): :func:`kqlib.attribution.attribute_attention` (``[L, H, T]``, no
    diagnostics)."""
    if config.method == SYNAPSE_METHOD:
        return attribute_attention(lm, prompt, target, steps=config.steps if config.rule != "adaptive" else None,
                                   rule=config.rule, tol=config.tol, batch_size=batch_size), None
    result = attribute_with_diagnostics(lm, prompt, target, method=config.method,
                                        steps=config.steps if config.rule != "adaptive" else None,
                                        site=config.site, rule=config.rule, batch_size=batch_size,
                                        baseline=baseline, tol=config.tol)  # raises if invalid
    return result.scores, result.diagnostics


def resolve_config(config: AttributionConfig | None, **keywords) -> AttributionConfig:
    """``config``, or one built from the keywords ``method, steps, rule, site, tol``; both at once (a keyword
    that differs from its default beside a ``config``) is refused: one attribution has one description."""
    defaults = {f.name: f.default for f in fields(AttributionConfig)}
    if config is None:
        return AttributionConfig(**keywords)  # refuses bad values now
    if not isinstance(config, AttributionConfig):
        raise ParameterError(f"config must be an AttributionConfig, got {type(config).__name__}")
    clash = sorted(k for k, v in keywords.items() if v != defaults[k])
    if clash:
        raise ParameterError(f"pass either config=AttributionConfig(...) or the keywords {', '.join(clash)}, "
                             f"not both (config={config})")
    return config


def attribute_many(lm, queries: Iterable, config: AttributionConfig | None = None, *, method: str = "ig",
                   steps: int | None = None, site: str = "post",
                   rule: str = "riemann", batch_size: int | None = None, baseline: torch.Tensor | None = None,
                   cache: AttributionCache | str | None = None, use_cache: bool = True,
                   progress: bool = True, desc: str | None = None, executor: str | None = None,
                   address: str | None = None, workers: int | None = None, tol: float | None = None,
                   diagnostics: bool = False, threads: int | str | None = None):
    """Scores ``[n_queries, n_layers, n_neurons]`` for many queries (see :func:`kqlib.attribute`; ``rule``,
    ``steps`` and ``tol`` as there).

    What is attributed is one :class:`~kqlib.attribution.AttributionConfig`: pass it as ``config`` or as the
    keywords ``method, steps, rule, site, tol`` (not both). With ``config.method == "attention-ig"`` (knowledge
    synapses) the result is a list of ``[n_layers, n_heads, T]`` tensors, one per query (T: its prompt length),
    through the same cache; diagnostics are None for them.

    Each attribution is cached with its :class:`~kqlib.attribution.Diagnostics`; with ``diagnostics=True`` the
    call returns ``(scores, [Diagnostics or None per query])`` (None: an entry cached before diagnostics existed).
    ``threads``: torch threads for the local executor: None leaves torch's setting, an integer sets it,
    ``"auto"`` uses the cores free now (:func:`kqlib.core.threads.free_cores`) and looks again between
    queries (at most every ``RESAMPLE_S`` seconds), so a run yields to other work and takes cores back later.

    Each finished query is written to the cache at once, so an interrupted call loses nothing that finished
    and a rerun recomputes nothing that is cached. ``cache``: an :class:`AttributionCache`, a directory, a
    URL (``file://``, ``s3://``, ``gs://``, any fsspec URL), or None for the default
    (``$KQLIB_CACHE/attributions``).

    ``lm``: an :class:`~kqlib.LM`, or a model name / directory (loaded here for ``executor="local"``).
    ``executor="ray"``: run on a Ray actor pool, one loaded model per actor (see :mod:`kqlib.runs.ray_pool`);
    ``address`` (None: local Ray, ``"auto"``, ``"HOST:PORT"``) and ``workers`` (default: one per GPU, else
    per CPU) apply to it only. The results are the same, in query order. ``executor``: ``"local"`` (None) or
    ``"ray"``, passed as a value (the book runner passes its ``--executor`` as a chapter parameter).
    """
    executor = executor or "local"
    if executor not in ("local", "ray"):
        raise ParameterError(f"executor must be 'local' or 'ray', got {executor!r}")
    config = resolve_config(config, method=method, steps=steps, rule=rule, site=site, tol=tol)
    method, rule, site, tol = config.method, config.rule, config.site, config.tol
    steps = None if rule == "adaptive" else config.steps
    synapses = method == SYNAPSE_METHOD
    pick_threads = _thread_picker(threads)
    check_batch_size(batch_size)
    if synapses and executor == "ray":
        raise ParameterError("attention-ig (knowledge synapses) runs on the local executor only")
    if synapses and baseline is not None:
        raise ParameterError("a baseline is only used by method='amig', not 'attention-ig'")
    if executor == "ray":
        return attribute_many_ray(lm, queries, method=method, steps=steps, site=site, rule=rule, batch_size=batch_size,
                                  baseline=baseline, cache=cache, use_cache=use_cache, progress=progress,
                                  desc=desc, address=address, workers=workers, tol=tol, diagnostics=diagnostics)
    if isinstance(lm, str):
        lm = models.load(lm)
    queries = list(queries)
    store = cache if isinstance(cache, AttributionCache) else AttributionCache(cache)
    if use_cache and store.remote:
        store.check()  # an unreachable cache URL fails here, before any work
    if not synapses:
        check_baseline(lm, method, baseline)
    if method == "amig" and baseline is None:
        baseline = amig_baseline(lm, site=site)
    out: list | torch.Tensor = ([None] * len(queries) if synapses else
                                torch.empty(len(queries), lm.n_layers, lm.n_neurons,
                                            dtype=torch.float64 if lm.dtype == torch.float64 else torch.float32))
    diags: list[Diagnostics | None] = [None] * len(queries)
    todo = []
    for n, q in enumerate(queries):  # every query is read (and refused) before any attribution
        try:
            prompt, target = query_prompt_target(q)
            t = target_token(lm, prompt, target)
        except ParameterError as exc:
            raise ParameterError(f"query {n} of {len(queries)}: {exc}") from None
        key = config.key(lm.fingerprint, prompt, t, baseline)
        hit = store.get_entry(key) if use_cache else None
        if hit is not None:
            out[n], diags[n] = hit
        else:
            todo.append((n, prompt, t, key))
    cached = len(queries) - len(todo)
    bar = Progress(len(todo), desc or f"{method} attribution", "query", enabled=progress, rate="per_item",
                   start_note=f"{cached} from cache" if cached else None)
    for n, prompt, t, key in todo:
        pick_threads()
        scores, diag = attribute(lm, prompt, t, config, batch_size=batch_size, baseline=baseline)  # raises if invalid
        if use_cache:
            store.put(key, scores, meta={"prompt": prompt, "target": t, "method": method, "steps": config.steps,
                                         "rule": rule, "tol": config.tol, "site": None if synapses else site,
                                         "model": lm.name}, diagnostics=diag)
        out[n], diags[n] = scores, diag
        bar.step()
    bar.close()
    return (out, diags) if diagnostics else out

