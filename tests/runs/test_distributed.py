"""executor="ray": equal to local, a killed worker is replaced, the cache on a real S3 API, clear errors.

One local Ray instance (2 CPUs) for the module; workers load a tiny model saved to a directory, by path.
Local comparisons run with one torch thread, as each 1-CPU Ray actor does: with the same thread count the
results are bitwise equal (with 2 threads they differ by float reduction order, ~1e-8).
"""

import contextlib
import logging
import socket
import threading
import time

import pytest
import torch

import kqlib
import kqlib.runs.many
from kqlib.runs.cache import AttributionCache, CacheUnreachableError
from tiny import tiny_lm

ray = pytest.importorskip("ray")
from kqlib.runs import ray_pool as distributed  # noqa: E402
from kqlib.runs.ray_pool import ClusterUnreachableError  # noqa: E402

WORDS = ["paris", "berlin", "rome", "london", "madrid", "french", "german", "english"]
PROMPTS = ["the capital of france is", "the capital of germany is", "the native language of a french is",
           "the mother tongue of a german is", "the city of rome is in"]


def queries(n):
    """n distinct queries, string and integer targets mixed."""
    out = []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)] + " ." * (i // len(PROMPTS))
        out.append((prompt, WORDS[i % len(WORDS)] if i % 3 else 7 + i % 20))
    return out


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, namespace=distributed.NAMESPACE, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    lm = tiny_lm("llama")
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return str(d)


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def local(model_dir, qs, **kw):
    with one_thread():
        return kqlib.attribute_many(kqlib.load(model_dir), qs, use_cache=False, progress=False, **kw)


def count_calls(monkeypatch):
    calls = []
    real = kqlib.runs.many.attribute
    monkeypatch.setattr(kqlib.runs.many, "attribute", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    return calls


def test_ray_equals_local_and_shares_the_cache(ray_local, model_dir, tmp_path, monkeypatch, capfd):
    qs = queries(10)
    results = {}
    for method in ("ig", "amig"):
        results[method] = got = kqlib.attribute_many(model_dir, qs, method=method, steps=4, executor="ray", workers=2,
                                   cache=f"file://{tmp_path}")
        assert torch.equal(got, local(model_dir, qs, method=method, steps=4)), method
        assert distributed.last_run["computed"] == 10 and distributed.last_run["workers"] == 2
    err = capfd.readouterr().err
    assert "queries/s on 2 worker(s)" in err and "ETA" in err
    # the workers wrote the very keys a local run computes: a local rerun recomputes nothing ...
    calls = count_calls(monkeypatch)
    again = kqlib.attribute_many(kqlib.load(model_dir), qs, steps=4, cache=tmp_path, progress=False)
    assert calls == [] and torch.equal(again, results["ig"])
    # ... and a ray rerun dispatches nothing (cached in the driver), also when passed an LM
    kqlib.attribute_many(kqlib.load(model_dir), qs, steps=4, executor="ray", workers=2, cache=tmp_path,
                         progress=False)
    assert distributed.last_run["cached"] == 10 and distributed.last_run["computed"] == 0


def test_killed_workers_are_replaced_and_nothing_is_lost(ray_local, model_dir, tmp_path):
    qs = queries(40)
    cache = AttributionCache(tmp_path)
    kills = []

    def killer():
        # worker 0 is killed as by preemption (Ray restarts it and retries its task); worker 1 is killed for good
        # (the driver starts a replacement and resends its unfinished batches)
        for slot, after, no_restart in ((0, 3, False), (1, 8, True)):
            deadline = time.time() + 120
            while len(cache) < after and time.time() < deadline:
                time.sleep(0.05)
            names = [a["name"] if isinstance(a, dict) else a for a in ray.util.list_named_actors(all_namespaces=True)]
            name = next(n for n in names if n.startswith("kqlib-") and f"-w{slot}-" in n)
            ray.kill(ray.get_actor(name, namespace=distributed.NAMESPACE), no_restart=no_restart)
            kills.append((name, len(cache)))

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    got = kqlib.attribute_many(model_dir, qs, steps=20, executor="ray", workers=2, cache=tmp_path,
                               progress=False)
    t.join(timeout=30)
    assert len(kills) == 2 and all(done < len(qs) for _, done in kills), kills  # killed mid-run
    assert distributed.last_run["replaced"] >= 1
    assert torch.equal(got, local(model_dir, qs, steps=20))
    # every entry is complete; a worker killed in the middle of a write can leave a ".tmp-*" file, which is
    # never read as an entry
    assert len(cache) == len(qs) and all(cache.get(k) is not None for k in cache.keys())


@pytest.fixture(scope="module")
def s3():
    """A real S3 API on 127.0.0.1 (moto's server mode): no cloud account."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server.start()
    url = f"http://127.0.0.1:{port}"
    creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    boto3.client("s3", endpoint_url=url, **creds).create_bucket(Bucket="kqlib-test")
    yield {"endpoint_url": url, "key": "testing", "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}
    server.stop()


def test_cache_on_s3_shared_by_workers(ray_local, model_dir, s3, monkeypatch):
    cache = AttributionCache("s3://kqlib-test/run1", storage_options=s3)
    qs = queries(6)
    got = kqlib.attribute_many(model_dir, qs, steps=4, executor="ray", workers=2, cache=cache, progress=False)
    assert torch.equal(got, local(model_dir, qs, steps=4))
    assert len(cache) == 6
    # a corrupt object is detected, deleted and recomputed (locally here, through the same URL)
    key = cache.keys()[0]
    cache.fs.pipe_file(cache.path(key), b"truncated")
    calls = count_calls(monkeypatch)
    with pytest.warns(UserWarning, match="corrupt"), one_thread():
        again = kqlib.attribute_many(kqlib.load(model_dir), qs, steps=4, cache=cache, progress=False)
    assert len(calls) == 1 and torch.equal(again, got)
    assert cache.get(key) is not None


def test_unreachable_cache_and_cluster_fail_before_any_work(model_dir, s3, monkeypatch):
    calls = count_calls(monkeypatch)
    lm = kqlib.load(model_dir)
    with pytest.raises(CacheUnreachableError, match="no-such-bucket"):
        kqlib.attribute_many(lm, queries(2), steps=3, cache=AttributionCache("s3://no-such-bucket/x",
                                                                             storage_options=s3))
    dead = {**s3, "endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    with pytest.raises(CacheUnreachableError, match="cannot be written"):
        kqlib.attribute_many(lm, queries(2), steps=3, executor="ray",
                             cache=AttributionCache("s3://kqlib-test/x", storage_options=dead))
    t = time.time()
    with pytest.raises(ClusterUnreachableError, match="127.0.0.1:9"):
        kqlib.attribute_many(lm, queries(2), steps=3, executor="ray", address="127.0.0.1:9", use_cache=False)
    assert time.time() - t < 10 and calls == []


def test_in_memory_lm_is_a_clear_error(tmp_path):
    with pytest.raises(kqlib.errors.ParameterError, match="save_pretrained"):
        kqlib.attribute_many(tiny_lm("llama"), queries(1), steps=3, executor="ray", cache=tmp_path)
    with pytest.raises(kqlib.errors.ParameterError, match="executor"):
        kqlib.attribute_many(tiny_lm("llama"), queries(1), steps=3, executor="dask", cache=tmp_path)


def _kq(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "kqlib.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_unreachable_address_is_a_clear_error():
    r = _kq("attribute", "--executor", "ray", "--address", "127.0.0.1:9", "--facts", "1")
    assert r.returncode == 2 and "cannot reach the Ray cluster" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_on_the_cluster_with_the_embedded_model(ray_local, tmp_path):
    """`kq attribute --executor ray --address HOST:PORT` with smollm2-135m: the same table as a local run."""
    import pandas as pd

    address = ray.get_runtime_context().gcs_address
    common = ("attribute", "--model", "smollm2-135m", "--relation", "P103", "--facts", "1", "--steps", "3")
    r = _kq(*common, "--executor", "ray", "--address", address, "--workers", "2", "--out", str(tmp_path / "ray.csv"),
            "--cache", f"file://{tmp_path / 'cache'}")
    assert r.returncode == 0, r.stderr
    assert "on Ray" in r.stderr and "queries/s on" in r.stderr
    # a local run over the same cache finds every query there (same keys) and writes the same table
    r = _kq(*common, "--out", str(tmp_path / "local.csv"), "--cache", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert "0 to compute" in r.stderr or "to compute" not in r.stderr
    a, b = pd.read_csv(tmp_path / "ray.csv"), pd.read_csv(tmp_path / "local.csv")
    pd.testing.assert_frame_equal(a, b)


def test_executor_is_a_value_never_an_environment_variable(monkeypatch):
    """`kq book/run --executor X` passes X to the chapters as a value; the library reads no KQLIB_EXECUTOR."""
    import argparse

    from kqlib.book.run.runner import with_executor
    from kqlib.book.chapter import Chapter
    from kqlib.errors import ParameterError
    from tiny import tiny_lm

    args = argparse.Namespace(executor=None, address=None)
    params = with_executor({"models": ["x"]}, args, {"executor": "ray", "address": "auto"})
    assert params["executor"] == "ray" and params["ray_address"] == "auto"
    ch = Chapter("99_test", {"models": ["x"], **params}, names=["models"])
    assert ch.executor == "ray" and ch.p.executor == "ray" and ch.params == {"models": ["x"]}
    monkeypatch.setenv("KQLIB_EXECUTOR", "ray")  # would send the call to Ray before the fix: ignored now
    out = kqlib.attribute_many(tiny_lm("llama"), [("the capital of france is", "paris")], steps=3, use_cache=False,
                               progress=False)
    assert out.shape[0] == 1 and out.abs().max() > 0
    with pytest.raises(ParameterError, match="executor must be"):
        kqlib.attribute_many(tiny_lm("llama"), [("the capital of france is", "paris")], steps=3, executor="bogus")

