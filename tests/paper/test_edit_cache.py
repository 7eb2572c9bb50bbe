"""Edits are cached by content like attributions (a rerun of chapter 05 resumes), and a cache on a full disk is
reported with its folder and what to do, leaving nothing partial."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from kqlib.paper import edit_loop
from kqlib.paper.edit_loop import FactEdit, edit_key, run_edits
from kqlib.paper.pararel import Fact, Query
from kqlib.runs.cache import AttributionCache, CacheWriteError
from tiny import tiny_lm


def _plans(lm):
    ids = lm.answer_token_ids("the capital of france is", "paris")

    def q(fid, subject, obj, i=0):
        return Query(fid, "P36", subject, obj, f"the capital of {subject} is", i, answer_ids=tuple(ids),
                     target_id=ids[0], correct=True)

    edited = q("f0", "france", "paris")
    firsts = {x.fact_id: x for x in [edited, q("f3", "italy", "rome"), q("f4", "germany", "berlin")]}
    plans = [FactEdit(Fact("P36", "france", "paris", "f0"), [edited], [q("f0", "france", "paris", 1)],
                      {"N_i": {(0, 1), (1, 2)}, "N_g": {(0, 1)}}, {"fact_id": "f0"})]
    return plans, firsts


def _same(a, b) -> bool:
    """Rows equal value for value (NaN equal to NaN), with the same types."""
    import pandas as pd

    return len(a) == len(b) and pd.DataFrame(a).equals(pd.DataFrame(b)) and all(
        type(x[k]) is type(y[k]) for x, y in zip(a, b) for k in x)


def _run(lm, plans, firsts, cache, **kw):
    return run_edits(lm, plans, firsts, tasks=("erase", "update"), n_unrelated=2, ppl_texts=None, progress=False,
                     objects={"P36": ["rome", "berlin", "paris"]}, edit_cache=cache, **kw)


def test_a_rerun_takes_every_edit_from_the_disk_cache(tmp_path, monkeypatch):
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    plans, firsts = _plans(lm)
    first = _run(lm, plans, firsts, tmp_path / "edits")
    n_edits = sum(not r["reused"] for r in first)
    assert n_edits >= 3 and len(AttributionCache(tmp_path / "edits")) == n_edits

    def no_edit(*a, **k):
        raise AssertionError("an edit was evaluated again")

    monkeypatch.setattr(edit_loop.editing, "evaluate_edit", no_edit)
    assert _same(_run(lm, plans, firsts, tmp_path / "edits"), first)  # the same rows, bit for bit
    with pytest.raises(AssertionError, match="evaluated again"):
        _run(lm, plans, firsts, tmp_path / "other")  # another folder: nothing cached there
    with pytest.raises(AssertionError, match="evaluated again"):
        _run(lm, plans, firsts, tmp_path / "edits", lambda2=2.0)  # another λ2: another key


def test_a_damaged_edit_entry_is_recomputed(tmp_path):
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    plans, firsts = _plans(lm)
    first = _run(lm, plans, firsts, tmp_path / "edits")
    store = AttributionCache(tmp_path / "edits")
    for key in store.keys():
        store.path(key).write_bytes(store.path(key).read_bytes()[:50])  # truncated
    with pytest.warns(UserWarning, match="discarding corrupt cache entry"):
        assert _same(_run(lm, plans, firsts, tmp_path / "edits"), first)


def test_edit_key_depends_on_every_input():
    base = dict(fingerprint="m", task="erase", neurons={(0, 1), (2, 3)}, edited=[("p", 1)], neighbors=[("q", 1)],
                unrelated=[("u", 2)], new_id=None, lambda1=1.0, lambda2=8.0, texts=())
    key = edit_key(**base)
    assert edit_key(**{**base, "neurons": [(2, 3), (0, 1)]}) == key  # a set: order does not matter
    for field, value in [("fingerprint", "m2"), ("task", "update"), ("neurons", {(0, 1)}), ("edited", [("p", 2)]),
                         ("neighbors", []), ("unrelated", [("v", 2)]), ("new_id", 7), ("lambda1", 2.0),
                         ("lambda2", 1.0), ("texts", ("t",))]:
        assert edit_key(**{**base, field: value}) != key, field


@pytest.mark.parametrize("code,says", [(errno.ENOSPC, "is full"), (errno.EACCES, "cannot be written")])
def test_a_full_disk_is_named_with_the_folder_and_nothing_partial_is_left(tmp_path, monkeypatch, code, says):
    store = AttributionCache(tmp_path / "cache")
    store.put("ab" + "0" * 62, torch.ones(2, 3))  # an earlier entry: kept
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])  # part of it went to disk, then the disk was full
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    key = "ab" + "1" * 62
    with pytest.raises(CacheWriteError) as err:
        store.put(key, torch.ones(2, 3))
    msg = str(err.value)
    assert str(tmp_path / "cache" / "ab") in msg and says in msg and "KQLIB_CACHE" in msg and "rerun" in msg
    assert sorted(p.name for p in (tmp_path / "cache" / "ab").iterdir()) == ["ab" + "0" * 62 + ".pt"]
    monkeypatch.undo()
    assert store.get(key) is None and torch.equal(store.get("ab" + "0" * 62), torch.ones(2, 3))
