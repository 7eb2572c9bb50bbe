"""The attribution cache: content keys, atomic writes, corrupt entries, interrupted runs."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import kqlib
import kqlib.runs.many
from kqlib.errors import ParameterError
from kqlib.runs.cache import AttributionCache
from tiny import tiny_lm

QUERIES = [("the capital of france is", "paris"), ("the capital of germany is", "berlin"),
           ("the capital of italy is", "rome"), ("the native language of a french is", "french")]


def test_roundtrip_and_corrupt_entry_is_recomputed(tmp_path):
    cache = AttributionCache(tmp_path)
    x = torch.randn(3, 4)
    cache.put("ab" * 32, x)
    assert torch.equal(cache.get("ab" * 32), x)
    path = cache.path("ab" * 32)
    path.write_bytes(path.read_bytes()[:-20])  # truncated file
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get("ab" * 32) is None
    assert not path.exists()
    assert not list(tmp_path.rglob(".tmp-*"))


def test_second_run_recomputes_nothing_and_keys_depend_on_parameters(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    calls = []
    real = kqlib.runs.many.attribute
    monkeypatch.setattr(kqlib.runs.many, "attribute", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    first = kqlib.attribute_many(lm, QUERIES, steps=3, cache=tmp_path, progress=False)
    assert len(calls) == 4
    second = kqlib.attribute_many(lm, QUERIES, steps=3, cache=tmp_path, progress=False)
    assert len(calls) == 4 and torch.equal(first, second)
    kqlib.attribute_many(lm, QUERIES[:1], steps=4, cache=tmp_path, progress=False)  # other steps: new key
    kqlib.attribute_many(lm, QUERIES[:1], steps=3, site="pre", cache=tmp_path, progress=False)
    assert len(calls) == 6
    torch.testing.assert_close(first[0], kqlib.attribute(lm, *QUERIES[0], steps=3))


def test_changed_weights_do_not_reuse_entries(tmp_path):
    lm = tiny_lm("llama")
    kqlib.attribute_many(lm, QUERIES[:1], steps=3, cache=tmp_path, progress=False)
    with torch.no_grad():
        lm.value_vector(0, 0).mul_(2)
    kqlib.attribute_many(lm, QUERIES[:1], steps=3, cache=tmp_path, progress=False)
    assert len(AttributionCache(tmp_path)) == 2


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    lm = tiny_lm("gpt2")
    real = kqlib.runs.many.attribute
    calls = []

    def flaky(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(kqlib.runs.many, "attribute", flaky)
    with pytest.raises(KeyboardInterrupt):
        kqlib.attribute_many(lm, QUERIES, steps=3, cache=tmp_path, progress=False)
    assert len(AttributionCache(tmp_path)) == 2
    monkeypatch.setattr(kqlib.runs.many, "attribute", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    resumed = kqlib.attribute_many(lm, QUERIES, steps=3, cache=tmp_path, progress=False)
    assert calls[2:] == [QUERIES[2][0], QUERIES[3][0]]
    fresh = kqlib.attribute_many(lm, QUERIES, steps=3, cache=tmp_path / "fresh", progress=False)
    assert torch.equal(resumed, fresh)


def test_ctrl_c_in_a_real_process_leaves_only_complete_entries(tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parents[1] / 'helpers')!r})
        import signal; signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job ignores it
        import kqlib
        from tiny import tiny_lm
        import time
        import kqlib.runs.many as many
        real = many.attribute
        def slow(*a, **k):  # >= 10 s for the 200 queries: an idle machine must not finish before the Ctrl-C
            time.sleep(0.05)
            return real(*a, **k)
        many.attribute = slow
        lm = tiny_lm("llama")
        queries = [("the capital of france is", w) for w in ["paris", "berlin", "rome", "london", "madrid"] * 40]
        queries = [(p + " " * i, w) for i, (p, w) in enumerate(queries)]
        kqlib.attribute_many(lm, queries, steps=20, cache={str(tmp_path)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300  # a loaded CI machine imports torch slowly
    while len(AttributionCache(tmp_path)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    finished_first = proc.poll() == 0
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=180)
    if finished_first:  # seen on an idle fresh-clone CI run: nothing was left to interrupt
        pytest.skip("the child finished all attributions before the Ctrl-C could be sent")
    assert proc.returncode != 0  # interrupted, not finished
    assert not list(tmp_path.rglob(".tmp-*"))
    cache = AttributionCache(tmp_path)
    n = len(cache)
    assert 3 <= n < 200
    for f in tmp_path.glob("*/*.pt"):
        assert cache.get(f.stem) is not None  # every entry left behind is complete and valid


def test_config_and_keywords_are_one_description(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    calls = []
    real = kqlib.runs.many.attribute
    monkeypatch.setattr(kqlib.runs.many, "attribute", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    by_keywords = kqlib.attribute_many(lm, QUERIES[:2], steps=3, site="pre", cache=tmp_path, progress=False)
    config = kqlib.AttributionConfig(steps=3, site="pre")
    by_config = kqlib.attribute_many(lm, QUERIES[:2], config, cache=tmp_path, progress=False)
    assert len(calls) == 2 and torch.equal(by_keywords, by_config)  # the same key: the second call is all cache
    with pytest.raises(ParameterError, match="either config"):
        kqlib.attribute_many(lm, QUERIES[:1], config, steps=4, cache=tmp_path, progress=False)
    with pytest.raises(ParameterError, match="AttributionConfig"):
        kqlib.attribute_many(lm, QUERIES[:1], {"steps": 3}, cache=tmp_path, progress=False)


def test_attention_configs_go_through_the_same_cache(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    config = kqlib.AttributionConfig(method="attention-ig", steps=3)
    first = kqlib.attribute_many(lm, QUERIES[:2], config, cache=tmp_path, progress=False)
    assert len(first) == 2 and all(s.dim() == 3 and s.shape[0] == lm.n_layers for s in first)
    torch.testing.assert_close(first[1], kqlib.attribute_attention(lm, *QUERIES[1], steps=3))
    monkeypatch.setattr(kqlib.runs.many, "attribute", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    again = kqlib.attribute_many(lm, QUERIES[:2], config, cache=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with pytest.raises(ParameterError, match="local executor"):
        kqlib.attribute_many(lm, QUERIES[:1], config, executor="ray", cache=tmp_path, progress=False)
