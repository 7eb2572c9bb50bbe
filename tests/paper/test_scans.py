"""The ParaRel scan done once (cached by content) and the clear stop when a model knows too few facts."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from kqlib.errors import TooFewFacts
from kqlib.paper import pararel, scans
from kqlib.paper.pararel import Dataset, Fact, FactEntry, Query
from kqlib.runs.cache import AttributionCache
from test_pararel import _controlled_logits, tiny_root  # noqa: F401 (fixture)
from tiny import tiny_lm


@pytest.fixture()
def lm(monkeypatch, tmp_path):
    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path / "cache"))
    model = tiny_lm("llama")
    model.name = "tiny"
    return model


def _entry(fid, rel, subject, obj, correct):
    qs = [Query(fid, rel, subject, obj, f"q{i} {subject}", i, (7,), 7, 1 if c else 5, 0.5, c, 7)
          for i, c in enumerate(correct)]
    return FactEntry(Fact(rel, subject, obj, fid), qs)


def _ds(entries, scan, model="m"):
    return Dataset(entries, params={"model": model, "min_correct": 2}, scan=scan)


def _stats(facts, scanned, kept, not_answered, few=0):
    return dict(facts=facts, patterns=5, scanned=scanned, evaluated=scanned - few, kept=kept,
                dropped_multi_token=0, dropped_few_queries=few, dropped_not_answered=not_answered, seconds=0.1)


# ------------------------------------------------------------------------------------------- records


def test_record_roundtrip_and_damaged_record_is_recomputed(tmp_path):
    store = AttributionCache(tmp_path)
    store.put_record("ab" * 32, {"x": [1, 2], "y": "z"})
    assert store.get_record("ab" * 32) == {"x": [1, 2], "y": "z"}
    assert store.get_record("cd" * 32) is None
    assert len(store) == 0  # records are not attribution entries
    path = store.path("ab" * 32, ".json")
    entry = json.loads(path.read_text())
    entry["record"] = entry["record"].replace("z", "w")  # content changed, digest not
    path.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match="corrupt cache record"):
        assert store.get_record("ab" * 32) is None
    assert not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00truncated")
    with pytest.warns(UserWarning, match="corrupt cache record"):
        assert store.get_record("ab" * 32) is None


def test_dataset_record_roundtrip():
    ds = _ds([_entry("a", "P36", "france", "paris", (True, False, True))],
             {"P36": _stats(3, 3, 1, 2), "P103": _stats(2, 2, 0, 2)})
    back = scans.from_record(json.loads(json.dumps(scans.to_record(ds), sort_keys=True)))
    assert back.facts == ds.facts and back.scan == ds.scan and back.params == ds.params
    assert list(back.scan) == list(ds.scan)  # relation order kept (the record is written with sorted keys)
    assert isinstance(back.queries[0].answer_ids, tuple)


# ------------------------------------------------------------------------------------------ the scan


def test_scan_runs_once_per_model_data_and_parameters(lm, tiny_root, monkeypatch):
    monkeypatch.setattr(lm, "next_token_logits", _controlled_logits(lm, lambda p: ("french", 1)))
    calls = []
    real = pararel.build_dataset
    monkeypatch.setattr(pararel, "build_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(root=tiny_root, batch_size=1, progress=False)
    first = scans.scan(lm, "P103", 2, **kw)
    again = scans.scan(lm, "P103", 2, **kw)
    assert len(calls) == 1 and not first.params["cached"] and again.params["cached"]
    assert again.facts == first.facts and again.scan == first.scan
    assert [(q.rank, q.correct, q.target_id) for q in again.queries] == [(q.rank, q.correct, q.target_id)
                                                                         for q in first.queries]
    scans.scan(lm, "P103", 2, seed=1, **kw)  # other parameters: another scan
    scans.scan(lm, "P103", 2, min_correct=1, **kw)
    assert len(calls) == 3
    # other data (a fact file changed): another scan
    tuples = tiny_root / "tuples" / "P103.jsonl"
    tuples.write_text(tuples.read_text() + json.dumps({"sub_label": "rome", "obj_label": "latin",
                                                        "uuid": "u-x"}) + "\n")
    scans.scan(lm, "P103", 2, **kw)
    assert len(calls) == 4
    # another model (other weights): another scan
    other = tiny_lm("llama")
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    other.name = "tiny"
    monkeypatch.setattr(other, "next_token_logits", _controlled_logits(other, lambda p: ("french", 1)))
    scans.scan(other, "P103", 2, **kw)
    assert len(calls) == 5
    scans.scan(lm, "P103", 2, cache=False, **kw)
    assert len(calls) == 6


def test_a_walk_to_the_end_answers_any_larger_number_of_facts(lm, tiny_root, monkeypatch):
    """A model that keeps k < n facts walked every fact: the scan for any n' > k (or all) is the same walk."""
    monkeypatch.setattr(lm, "next_token_logits", _controlled_logits(lm, lambda p: ("french", 1)))
    calls = []
    real = pararel.build_dataset
    monkeypatch.setattr(pararel, "build_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(root=tiny_root, batch_size=1, progress=False, min_correct=1)
    with pytest.warns(UserWarning, match="requested facts passed"):
        first = scans.scan(lm, "P103", 50, **kw)
    k = len(first)
    assert 0 < k < first.scan["P103"]["facts"] and first.scan["P103"]["scanned"] == first.scan["P103"]["facts"]
    for n in (k + 1, 7, None):
        again = scans.scan(lm, "P103", n, **kw)
        assert again.params["cached"] and again.facts == first.facts and again.params["n_per_relation"] == n
    assert len(calls) == 1
    fewer = scans.scan(lm, "P103", k, **kw)  # stops at its k-th kept fact: another walk
    assert len(calls) == 2 and not fewer.params["cached"]
    assert [e.fact for e in fewer] == [e.fact for e in first][:k]


# --------------------------------------------------------------------------------------- too few facts


def _empty(model):
    return _ds([], {"P36": _stats(471, 471, 0, 469, few=2), "P103": _stats(919, 919, 0, 919)}, model)


def _some(model):
    return _ds([_entry("a", "P103", "france", "french", (True, True, False))],
               {"P36": _stats(471, 471, 0, 471), "P103": _stats(919, 12, 1, 11)}, model)


def test_no_fact_stops_with_the_scan_and_what_to_do():
    with pytest.raises(TooFewFacts) as info:
        scans.require_facts({"/models/weak": _empty("/models/weak")}, 1, "chapter 01_kl_reexamination")
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert "'/models/weak' keeps 0 ParaRel fact(s); chapter 01_kl_reexamination needs at least 1" in msg
    assert "at least 2 of its phrasings" in msg
    assert "P36: 471 of 471 facts scanned, 0 kept (469 answered on fewer than 2" in msg
    assert "2 with too few phrasings" in msg and "P103: 919 of 919 facts scanned, 0 kept" in msg
    assert "kq data --model /models/weak" in msg and "-p relations" not in msg


def test_too_few_facts_names_the_relations_it_answers():
    with pytest.raises(TooFewFacts) as info:
        scans.require_facts({"weak": _some("weak")}, 2, "chapter 05_cas_editing")
    msg = str(info.value)
    assert "keeps 1 ParaRel fact(s); chapter 05_cas_editing needs at least 2" in msg
    assert 'It answers facts of P103: 1. Rerun with those: -p \'relations=["P103"]\'' in msg
    assert "kq data --model weak" in msg


def test_an_ignorant_model_is_left_out_and_the_others_go_on():
    good = _some("good")
    with pytest.warns(UserWarning, match="left out model 'weak'"):
        ok = scans.require_facts({"weak": _empty("weak"), "good": good}, 1, "chapter 02")
    assert list(ok) == ["good"] and ok["good"] is good
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nobody left out: no warning
        assert list(scans.require_facts({"good": good}, 1, "chapter 02")) == ["good"]


def test_chapter_localize_leaves_out_a_model_without_facts(monkeypatch, tmp_path):
    from kqlib.book.chapter import Chapter

    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path))
    weak, good = tiny_lm("llama"), tiny_lm("gpt2")
    weak.name, good.name = "weak", "good"
    answered = _ds([_entry("a", "P36", "france", "paris", (True, True, False))], {"P36": _stats(5, 1, 1, 0)})
    monkeypatch.setattr(scans, "scan", lambda lm, *a, **k: answered if lm.name == "good" else _empty(lm.name))
    params = dict(models=["weak", "good"], relations=["P36"], n_facts_per_relation=1, steps=2, methods=["ig"],
                  t_threshold=0.2, site="post", seed=0, query_filter="correct")
    ch = Chapter("99_test", params, names=list(params))
    ch.lms = [weak, good]
    lms = ch.models()
    with pytest.warns(UserWarning, match="left out model 'weak'"):
        data = ch.localize(verbose=False)
    assert [lm.name for lm in lms] == ["good"]  # the notebook's own list: the same object
    assert list(data.datasets) == ["good"] and set(data.facts.model) == {"good"}
    assert set(data.queries.model) == {"good"} and len(data.queries) == 2
    ch2 = Chapter("99_test", params, names=list(params))
    ch2.lms = [weak]
    with pytest.raises(TooFewFacts, match="'weak' keeps 0"):
        ch2.localize(verbose=False)
    ch3 = Chapter("99_test", params, names=list(params))
    ch3.lms = [good]
    with pytest.raises(TooFewFacts, match="needs at least 2"):
        ch3.localize(verbose=False, min_facts=2)


# -------------------------------------------------------------------------------------------- kq data


def test_what_it_knows_counts_phrasings_and_suggests_the_best():
    entries = [_entry("a", "P36", "france", "paris", (True, True, True, True, False)),
               _entry("b", "P36", "italy", "rome", (True, True, False, False, False)),
               _entry("c", "P103", "dante", "italian", (True, False, False)),
               _entry("d", "P103", "goethe", "german", (True, True, False)),
               _entry("e", "P103", "hugo", "french", (True, True, True))]
    ds = _ds(entries, {"P36": _stats(10, 10, 2, 8), "P103": _stats(10, 10, 3, 7), "P30": _stats(5, 5, 0, 5)})
    table = scans.what_it_knows(ds)
    assert list(table.relation) == ["P36", "P103", "P30"]  # >= 4 first, then >= 2
    row = table.set_index("relation")
    assert row.loc["P103", ["answered_1", "answered_2", "answered_4"]].tolist() == [3, 2, 0]
    assert row.loc["P36", ["answered_1", "answered_2", "answered_4"]].tolist() == [2, 2, 1]
    assert row.loc["P30", "answered_2"] == 0
    assert scans.suggest_relations(table) == ["P36", "P103"]
    assert scans.suggest_relations(table, min_facts=3) == []


def test_kq_data_model_lists_what_a_local_model_knows(tiny_root, tmp_path, monkeypatch, capsys):
    """`kq data --model <folder>`: per relation, facts answered on >= 1/2/4 phrasings, from the cached scan (a
    second call reads it), and the -p line (or what to try when the model knows nothing)."""
    from kqlib.cli import main

    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my-model"
    model = tiny_lm("llama")
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    argv = ["data", "--model", str(folder), "--pararel", str(tiny_root), "--sample", "0", "--top-k", "40"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "answered_2" in first and "answered_4" in first and "P103" in first
    assert first.splitlines()[2].split()[:2] == ["P103", "6"]  # the relation's 6 facts (tiny_root), all scanned
    assert "scan read from the cache" not in first
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "scan read from the cache" in again
    assert again.split("\n", 1)[1] == first.split("\n", 1)[1]  # the same table and advice
    # top-40 of a 59-token vocabulary: most phrasings count, so P103 (2 phrasings) is suggested
    assert """-p 'relations=["P103"]'""" in first
    assert main(argv[:-1] + ["1"]) == 0  # top-1: a random model answers (almost) nothing
    out = capsys.readouterr().out
    assert "relations=" in out or "answers none of these facts" in out
