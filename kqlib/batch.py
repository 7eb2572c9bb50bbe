"""Attribute many queries: cached on disk, with progress and ETA, resumable after an interruption."""

from __future__ import annotations

import os
from typing import Iterable

import torch

from .attribution import _check, amig_baseline, attribute, target_token
from .cache import AttributionCache, make_key, tensor_digest
from .progress import Progress


def query_prompt_target(q) -> tuple[str, object]:
    """Accept ``(prompt, target)`` pairs or objects with ``.prompt`` and ``.target_id`` / ``.target`` / ``.obj``."""
    if isinstance(q, (tuple, list)) and len(q) == 2:
        return q[0], q[1]
    for attr in ("target_id", "target", "obj"):
        if getattr(q, attr, None) is not None:
            return q.prompt, getattr(q, attr)
    raise TypeError(f"cannot read (prompt, target) from {q!r}")


def attribution_key(lm, prompt: str, target_id: int, method: str, steps: int, site: str,
                    baseline: torch.Tensor | None) -> str:
    return make_key(model=lm.fingerprint, prompt=prompt, target=target_id, method=method, steps=steps, site=site,
                    baseline=None if baseline is None else tensor_digest(baseline))


def attribute_many(lm, queries: Iterable, *, method: str = "ig", steps: int = 20, site: str = "post",
                   batch_size: int | None = None, baseline: torch.Tensor | None = None,
                   cache: AttributionCache | str | None = None, use_cache: bool = True,
                   progress: bool = True, desc: str | None = None, executor: str | None = None,
                   address: str | None = None, workers: int | None = None) -> torch.Tensor:
    """Scores ``[n_queries, n_layers, n_neurons]`` for many queries (see :func:`kqlib.attribute`).

    Each finished query is written to the cache at once, so an interrupted call loses nothing that finished
    and a rerun recomputes nothing that is cached. ``cache``: an :class:`AttributionCache`, a directory, a
    URL (``file://``, ``s3://``, ``gs://``, any fsspec URL), or None for the default
    (``$KQLIB_CACHE/attributions``).

    ``lm``: an :class:`~kqlib.LM`, or a model name / directory (loaded here for ``executor="local"``).
    ``executor="ray"``: run on a Ray actor pool, one loaded model per actor (see :mod:`kqlib.distributed`);
    ``address`` (None: local Ray, ``"auto"``, ``"HOST:PORT"``) and ``workers`` (default: one per GPU, else
    per CPU) apply to it only. The results are the same, in query order. ``executor=None``: the environment's
    ``KQLIB_EXECUTOR`` (set by ``kq book/run --executor``), else ``"local"``; likewise ``KQLIB_RAY_ADDRESS``.
    """
    executor = executor or os.environ.get("KQLIB_EXECUTOR") or "local"
    address = address or os.environ.get("KQLIB_RAY_ADDRESS") or None
    if executor == "ray":
        from .distributed import attribute_many_ray

        return attribute_many_ray(lm, queries, method=method, steps=steps, site=site, batch_size=batch_size,
                                  baseline=baseline, cache=cache, use_cache=use_cache, progress=progress,
                                  desc=desc, address=address, workers=workers)
    if executor != "local":
        from .errors import ParameterError

        raise ParameterError(f"executor must be 'local' or 'ray', got {executor!r}")
    if isinstance(lm, str):
        from .models import load

        lm = load(lm)
    _check(method, steps, site)
    queries = list(queries)
    store = cache if isinstance(cache, AttributionCache) else AttributionCache(cache)
    if use_cache and store.remote:
        store.check()  # an unreachable cache URL fails here, before any work
    if method == "amig" and baseline is None:
        baseline = amig_baseline(lm, site=site)
    out = torch.empty(len(queries), lm.n_layers, lm.n_neurons, dtype=torch.float64 if lm.dtype == torch.float64 else torch.float32)
    todo = []
    for n, q in enumerate(queries):
        prompt, target = query_prompt_target(q)
        t = target_token(lm, prompt, target)
        key = attribution_key(lm, prompt, t, method, steps, site, baseline)
        hit = store.get(key) if use_cache else None
        if hit is not None:
            out[n] = hit
        else:
            todo.append((n, prompt, t, key))
    cached = len(queries) - len(todo)
    bar = Progress(len(todo), desc or f"{method} attribution", "query", enabled=progress, rate="per_item",
                   start_note=f"{cached} from cache" if cached else None)
    for n, prompt, t, key in todo:
        scores = attribute(lm, prompt, t, method=method, steps=steps, site=site, batch_size=batch_size,
                           baseline=baseline)
        if use_cache:
            store.put(key, scores, meta={"prompt": prompt, "target": t, "method": method, "steps": steps,
                                         "site": site, "model": lm.name})
        out[n] = scores
        bar.step()
    bar.close()
    return out

