"""attribute_many(threads=...): a number is applied, "auto" looks at the free cores again between queries."""

import pytest
import torch

import kqlib
import kqlib.core.threads
import kqlib.runs.many as many
from kqlib.errors import ParameterError
from tiny import tiny_lm

QUERIES = [("the capital of france is", w) for w in ("paris", "berlin", "rome")]


def test_threads_number_is_applied_and_bad_values_refused_before_work(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    before = torch.get_num_threads()
    try:
        kqlib.attribute_many(lm, QUERIES[:1], steps=2, cache=tmp_path, progress=False, threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(many, "attribute", lambda *a, **k: pytest.fail("work started"))
        with pytest.raises(ParameterError, match="threads"):
            kqlib.attribute_many(lm, QUERIES, steps=2, cache=tmp_path / "x", progress=False, threads=0)
    finally:
        torch.set_num_threads(before)


def test_auto_threads_look_again_between_queries(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    looks = []
    monkeypatch.setattr(kqlib.core.threads, "free_cores", lambda interval=0.25: looks.append(1) or 1)
    monkeypatch.setattr(many, "RESAMPLE_S", 0.0)
    before = torch.get_num_threads()
    try:
        kqlib.attribute_many(lm, QUERIES, steps=2, cache=tmp_path, progress=False, threads="auto")
    finally:
        torch.set_num_threads(before)
    assert len(looks) == 1 + len(QUERIES)  # once before the work, then before every query
