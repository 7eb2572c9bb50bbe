"""Attribution on a Ray cluster: an actor pool, one loaded model per actor, a shared result cache.

``kqlib.attribute_many(model_name, queries, executor="ray", cache=URL)`` (or ``kq attribute --executor
ray``) calls :func:`attribute_many_ray`:

1. Connect to Ray (``address=None``: the running instance, or a new local one; ``"auto"``: the cluster this
   machine belongs to; ``"HOST:PORT"`` or ``"ray://HOST:PORT"``: that cluster). An unreachable address and
   an unwritable cache URL are reported (:class:`ClusterUnreachableError`,
   :class:`~kqlib.runs.cache.CacheUnreachableError`) before any work starts.
2. Start one actor, which loads the model by name (``kqlib.load(name)``; models are never pickled) and
   reports its weight fingerprint. The driver computes every cache key itself and reads the cached results
   (concurrently on object stores); only the missing queries are dispatched.
3. Start the other actors (a GPU each when the cluster has GPUs, else ``cpus_per_worker`` CPUs each) and
   send them batches of queries (``task_size`` per task, at most two tasks queued per actor). Each actor
   writes every finished query to the cache at once and skips queries that are already cached, so a retried
   or duplicated task recomputes and changes nothing.
4. Faults: actors are created with ``max_restarts`` and their tasks with ``max_task_retries``, so Ray restarts
   a crashed actor and retries its task; an actor that is gone for good (killed with ``no_restart``, node
   lost) is replaced by the driver and its unfinished batch is sent again. Results come back in query order
   and equal those of ``executor="local"`` (same model, same parameters, same device kind).

Progress on stderr: queries done, throughput, ETA, live workers and replacements. :data:`last_run` holds the
numbers of the last call (for benchmarks and tests).
"""

from __future__ import annotations

import numbers
import os
import socket
import sys
import time
import uuid
from collections import deque

import torch

from kqlib.attribution import (AttributionConfig, amig_baseline, attribute_with_diagnostics, check_batch_size,
                               target_token, tensor_digest)
from kqlib.core import models
from kqlib.core.models import EMBEDDED, LM, _looks_like_hub_id
from kqlib.errors import KqError, MissingDependencyError, ParameterError
from kqlib.runs.cache import AttributionCache
from kqlib.runs.progress import Progress
from kqlib.runs.queries import query_prompt_target

NAMESPACE = "kqlib"

#: Numbers of the last :func:`attribute_many_ray` call: queries, computed, cached, workers, replaced, ...
last_run: dict = {}


class ClusterUnreachableError(KqError, ConnectionError):
    """The Ray cluster address cannot be reached."""


class WorkerError(KqError, RuntimeError):
    """A query failed inside a worker for a reason other than the worker dying (the message has the cause)."""


def _ray():
    try:
        import ray  # heavy: ray (seconds to import), only for executor='ray'
    except ImportError as exc:  # pragma: no cover - ray is in requirements.txt
        raise MissingDependencyError("executor='ray' needs Ray: pip install 'ray>=2.40'") from exc
    return ray


# ------------------------------------------------------------------------------------------ connecting


def _check_tcp(address: str, timeout: float = 5.0) -> None:
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnreachableError(f"Ray address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at {address!r} ({exc}). Start it with `ray start --head` on the head "
            f"node (port 6379 by default), check the host, port and firewall, or leave --address out to run a "
            f"local Ray instance on this machine.") from exc


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray; return True when this call started it.

    ``address``: None or ``"local"`` (the running instance, or start a local one with ``num_cpus``),
    ``"auto"`` (the cluster this machine is part of, started with ``ray start``), ``"HOST:PORT"`` or
    ``"ray://HOST:PORT"`` (a remote head node; checked with a TCP connection first).
    """
    ray = _ray()
    if address not in (None, "", "local", "auto"):
        _check_tcp(address)
    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, namespace=NAMESPACE,
                 log_to_driver=True, configure_logging=False)
        return True
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
    except Exception as exc:
        raise ClusterUnreachableError(
            f"cannot connect to the Ray cluster at {address!r}: {type(exc).__name__}: {exc}. With 'auto', "
            f"start a cluster on this machine first (`ray start --head`) or give HOST:PORT.") from exc
    return True


# ---------------------------------------------------------------------------------------------- worker


class AttributionWorker:
    """The actor body: one loaded model; computes batches of queries and writes each result to the cache."""

    def __init__(self, model: str, device: str = "auto", dtype: str | None = None):
        try:
            from transformers.utils import logging as hf_logging  # heavy: transformers, in a Ray worker only

            hf_logging.disable_progress_bar()  # one "Loading weights" bar per actor clutters the driver's log
        except Exception:  # pragma: no cover
            pass
        t0 = time.time()
        self.lm = models.load(model, device=device, dtype=dtype)
        self.load_seconds = time.time() - t0

    def info(self, method: str, site: str, baseline: torch.Tensor | None) -> dict:
        lm = self.lm
        if method == "amig" and baseline is None:
            baseline = amig_baseline(lm, site=site)
        return dict(fingerprint=lm.fingerprint, n_layers=lm.n_layers, n_neurons=lm.n_neurons,
                    dtype=str(lm.dtype).replace("torch.", ""), device=str(lm.device), name=lm.name,
                    pid=os.getpid(), host=socket.gethostname(), load_seconds=self.load_seconds,
                    vocab=int(lm.model.get_output_embeddings().weight.shape[0]),
                    baseline_digest=None if baseline is None else tensor_digest(baseline))

    def resolve(self, pairs: list) -> list[int]:
        return [target_token(self.lm, p, t) for p, t in pairs]

    def run(self, batch: list, params: dict, cache: AttributionCache | None) -> list[torch.Tensor]:
        """``batch``: ``[(index, prompt, target_id, key), ...]`` -> scores in the same order."""
        method, site, baseline = params["method"], params["site"], params["baseline"]
        if method == "amig" and baseline is None:
            baseline = amig_baseline(self.lm, site=site)  # as the local path does
        out = []
        for _, prompt, t, key in batch:
            scores = cache.get(key) if cache is not None else None  # a retried task: done already
            if scores is None:
                result = attribute_with_diagnostics(
                    self.lm, prompt, t, method=method, steps=params["steps"], site=site, rule=params["rule"],
                    batch_size=params["batch_size"], baseline=baseline, tol=params.get("tol"))
                scores = result.scores
                if cache is not None:
                    cache.put(key, scores, meta={"prompt": prompt, "target": t, "method": method,
                                                 "steps": params["steps"], "rule": params["rule"], "site": site,
                                                 "tol": params.get("tol"), "model": self.lm.name},
                              diagnostics=result.diagnostics)
            out.append(scores.cpu())
        return out


# ---------------------------------------------------------------------------------------------- driver


def _model_name(model) -> tuple[str, object]:
    """(name a worker can ``kqlib.load``, the driver's LM or None)."""
    if isinstance(model, LM):
        name = model.name
        if not (name in EMBEDDED or os.path.isdir(name) or "/" in name or _looks_like_hub_id(name)):
            raise ParameterError(
                f"executor='ray' loads the model by name in every worker, but this LM's name {name!r} is not "
                f"loadable (an in-memory model). Save it with model.save_pretrained(DIR) and "
                f"tokenizer.save_pretrained(DIR) and pass DIR (on storage every node can read), or use "
                f"executor='local'.")
        return (os.path.abspath(name) if os.path.isdir(name) else name), model
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        return (os.path.abspath(name) if os.path.isdir(name) else name), None
    raise ParameterError(f"model must be an LM or a model name / directory, got {type(model).__name__}")


def default_workers() -> int:
    """One actor per GPU of the cluster, else one per CPU."""
    res = _ray().cluster_resources()
    return max(1, int(res.get("GPU", 0)) or int(res.get("CPU", 1)))


def attribute_many_ray(model, queries, *, method: str = "ig", steps: int | None = None, site: str = "post",
                       rule: str = "riemann", batch_size: int | None = None, baseline: torch.Tensor | None = None,
                       cache: AttributionCache | str | None = None, use_cache: bool = True,
                       progress: bool = True, desc: str | None = None, address: str | None = None,
                       workers: int | None = None, device: str = "auto", dtype: str | None = None,
                       task_size: int | None = None, cpus_per_worker: float = 1,
                       max_restarts: int = 3, max_task_retries: int = 3, max_failures: int | None = None,
                       num_cpus: int | None = None, tol: float | None = None, diagnostics: bool = False):
    """:func:`kqlib.attribute_many` on Ray (see the module docstring). ``[n_queries, n_layers, n_neurons]``.

    ``model``: a name or directory every worker can load, or an LM whose ``name`` is one (its weights must
    equal the loaded ones: checked by fingerprint). ``workers``: actors (default: one per GPU of the cluster,
    else one per CPU). ``task_size``: queries per task (default: about 4 tasks per worker, 1..16).
    ``max_failures``: worker deaths tolerated in the whole run before giving up (default 2 x workers + 2).
    ``num_cpus``: CPUs of a local Ray instance started by this call. ``diagnostics=True``: returns
    ``(scores, [Diagnostics or None])``, read back from the cache (None without a cache).
    """
    ray = _ray()
    config = AttributionConfig(method=method, steps=steps, rule=rule, site=site, tol=tol)  # refuses bad values first
    check_batch_size(batch_size)
    queries = list(queries)
    name, lm = _model_name(model)
    if dtype is None and lm is not None:
        dtype = str(lm.dtype).replace("torch.", "")
    store = None
    if use_cache:
        store = cache if isinstance(cache, AttributionCache) else AttributionCache(cache)
        store.check()  # an unreachable cache URL fails here, before any work
    connect(address, num_cpus=num_cpus)
    n_workers = workers or default_workers()
    if n_workers < 1:
        raise ParameterError(f"workers must be >= 1, got {n_workers}")
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = gpus > 0 and str(device) != "cpu"
    run_id = uuid.uuid4().hex[:8]
    Remote = ray.remote(AttributionWorker)
    opts = dict(max_restarts=max_restarts, max_task_retries=max_task_retries, namespace=NAMESPACE)
    opts.update(num_gpus=1, num_cpus=0) if use_gpu else opts.update(num_cpus=cpus_per_worker)
    actors: dict[int, object] = {}
    generation: dict[int, int] = {}

    def spawn(slot: int) -> None:
        generation[slot] = generation.get(slot, -1) + 1
        actors[slot] = Remote.options(name=f"kqlib-{run_id}-w{slot}-g{generation[slot]}", **opts).remote(
            name, "cuda" if use_gpu and device == "auto" else device, dtype)

    t_start = time.time()
    stats = dict(queries=len(queries), computed=0, cached=0, workers=0, replaced=0, failures=0, run_id=run_id,
                 executor="ray")
    last_run.clear()
    last_run.update(stats)
    try:
        # start every actor now: they load the model in parallel while the driver reads the cache
        n_workers = min(n_workers, max(1, len(queries)))
        for slot in range(n_workers):
            spawn(slot)
        try:
            info = ray.get(actors[0].info.remote(method, site, baseline))
        except ray.exceptions.RayError as exc:
            raise WorkerError(f"could not start a worker with model {name!r}: {exc}") from exc
        if lm is not None and lm.fingerprint != info["fingerprint"]:
            raise ParameterError(
                f"the workers loaded {name!r} with other weights than the LM passed in (fingerprints "
                f"{info['fingerprint'][:12]} != {lm.fingerprint[:12]}): an LM changed in memory cannot be sent "
                f"to workers; save it and pass its directory, or use executor='local'.")
        # --- keys, computed by the driver, and the cache lookup
        pairs = [query_prompt_target(q) for q in queries]
        targets: list[int | None] = [int(t) if _is_int(t) else None for _, t in pairs]
        need = [i for i, t in enumerate(targets) if t is None]
        if need and lm is not None:
            for i in need:
                targets[i] = target_token(lm, *pairs[i])
        elif need:
            for i in range(0, len(need), 2000):
                part = need[i:i + 2000]
                for j, t in zip(part, ray.get(actors[0].resolve.remote([pairs[k] for k in part]))):
                    targets[j] = t
        for t in targets:
            if not 0 <= t < info["vocab"]:
                raise ParameterError(f"target token id {t} is out of range: the vocabulary has ids 0..{info['vocab'] - 1}")
        keys = [config.key_with_digest(info["fingerprint"], p, t, info["baseline_digest"])
                for (p, _), t in zip(pairs, targets)]
        out_dtype = torch.float64 if info["dtype"] == "float64" else torch.float32
        out = torch.empty(len(queries), info["n_layers"], info["n_neurons"], dtype=out_dtype)
        hits = store.get_many(keys) if store is not None else [None] * len(keys)
        todo = []
        for n, hit in enumerate(hits):
            if hit is not None:
                out[n] = hit
            else:
                todo.append((n, pairs[n][0], targets[n], keys[n]))
        stats["cached"] = len(queries) - len(todo)

        def finished(out):
            if not diagnostics:
                return out
            entries = [store.get_entry(k) if store is not None else None for k in keys]
            return out, [None if e is None else e[1] for e in entries]

        if not todo:
            return finished(out)
        # --- dispatch
        if task_size is None:
            task_size = max(1, min(16, len(todo) // (4 * n_workers)))
        batches = deque(todo[i:i + task_size] for i in range(0, len(todo), task_size))
        stats["workers"] = n_workers
        max_failures = 2 * n_workers + 2 if max_failures is None else max_failures
        params = dict(method=method, steps=steps, site=site, rule=rule, batch_size=batch_size, baseline=baseline,
                      tol=tol)
        bar = Progress(len(todo), desc or f"{method} attribution", "query", enabled=progress, rate="per_second",
                       start_note=f"on Ray, {stats['cached']} from cache")
        stats["startup_seconds"] = time.time() - t_start  # connect, first model load, keys, cache reads
        inflight: dict = {}  # ref -> (slot, generation, batch)
        load = {slot: 0 for slot in actors}
        while batches or inflight:
            for slot in sorted(actors):
                while batches and load[slot] < 2:
                    batch = batches.popleft()
                    ref = actors[slot].run.remote(batch, params, store)
                    inflight[ref] = (slot, generation[slot], batch)
                    load[slot] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
            for ref in ready:
                slot, gen, batch = inflight.pop(ref)
                load[slot] -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    stats["failures"] += 1
                    if stats["failures"] > max_failures:
                        raise WorkerError(f"{stats['failures']} worker failures (limit {max_failures}); last: "
                                          f"{exc}") from exc
                    batches.appendleft(batch)
                    if gen == generation[slot]:  # replace this actor once, not once per lost task
                        print(f"[kqlib] worker {slot} died ({type(exc).__name__}); starting a replacement",
                              file=sys.stderr, flush=True)
                        ray.kill(actors[slot], no_restart=True)
                        spawn(slot)
                        stats["replaced"] += 1
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
                    raise WorkerError(f"a query failed in a worker: {cause}") from exc
                for (n, *_), scores in zip(batch, result):
                    out[n] = scores
                stats["computed"] += len(batch)
                bar.step(len(batch), note=f"on {len(actors)} worker(s)"
                         + (f", {stats['replaced']} worker(s) replaced" if stats["replaced"] else ""))
        stats["dispatch_seconds"] = time.time() - bar.t0
        stats["queries_per_second"] = len(todo) / max(stats["dispatch_seconds"], 1e-9)
        return finished(out)
    finally:
        for a in actors.values():
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        stats["seconds"] = time.time() - t_start
        last_run.update(stats)


def _is_int(t) -> bool:
    if isinstance(t, bool):
        return False
    return isinstance(t, numbers.Integral) or (torch.is_tensor(t) and t.numel() == 1 and not t.dtype.is_floating_point)
