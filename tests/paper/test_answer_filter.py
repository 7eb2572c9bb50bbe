"""The book's one answer filter (Dataset.with_queries, Chapter.localize) and the locality pool of the edit loop."""

from __future__ import annotations

import pytest
import torch

from kqlib.errors import ParameterError
from kqlib.paper import pararel
from kqlib.paper.edit_loop import locality_pool, run_edits, FactEdit
from kqlib.paper.pararel import Dataset, Fact, FactEntry, Query
from tiny import tiny_lm


def _entry(fid, subject, obj, correct, relation="P36"):
    fact = Fact(relation, subject, obj, fid)
    qs = [Query(fid, relation, subject, obj, f"the capital of {subject} is", i, answer_ids=(5,), target_id=5,
                correct=c) for i, c in enumerate(correct)]
    return FactEntry(fact, qs)


def _dataset():
    return Dataset([_entry("a", "france", "paris", (True, False, True)),
                    _entry("b", "germany", "berlin", (False, False, False)),
                    _entry("c", "italy", "rome", (True, True, True))], params={"model": "m"})


def test_with_queries_keeps_only_answered_queries_and_drops_empty_facts():
    ds = _dataset()
    kept = ds.with_queries("correct")
    assert [e.fact.fact_id for e in kept] == ["a", "c"]
    assert [q.pattern_index for q in kept.facts[0].queries] == [0, 2]
    assert all(q.correct for q in kept.queries)
    assert kept.params["query_filter"] == "correct" and kept.params["dropped_no_correct_query"] == 1
    every = ds.with_queries("all")
    assert len(every.queries) == 9 and every.params["query_filter"] == "all"
    assert len(ds.queries) == 9  # the original is unchanged
    with pytest.raises(ParameterError, match="query_filter"):
        ds.with_queries("right")


def test_chapter_localize_applies_one_filter_and_keeps_the_same_facts(monkeypatch, tmp_path):
    """Chapter.localize scans once (facts answered on >= 2 phrasings) and then filters the queries; the "all"
    filter sees the same facts with every query (the sensitivity table of chapter 01)."""
    from kqlib.book.chapter import Chapter

    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path))
    lm = tiny_lm("llama")
    lm.name = "tiny"
    calls = []

    def fake_build(lm_, relations, n, seed=0, min_correct=1, progress=True):
        calls.append(min_correct)
        return _dataset()

    monkeypatch.setattr(pararel, "build_dataset", fake_build)
    params = dict(models=["tiny"], relations=["P36"], n_facts_per_relation=2, steps=2, methods=["ig"],
                  t_threshold=0.2, site="post", seed=0, query_filter="correct")
    ch = Chapter("99_test", params, names=list(params))
    ch.lms = [lm]
    data = ch.localize(verbose=False)
    assert set(data.facts.fact_id) == {"a", "c"} and data.facts.correct.all() and len(data.facts) == 5
    assert set(data.queries.groupby("method").size()) == {5}
    other = ch.localize(verbose=False, query_filter="all")
    assert len(other.facts) == 9
    assert calls == [2]  # one scan, facts need two answered phrasings whatever the filter


def test_locality_pool_excludes_shared_subject_object_and_inverse_facts():
    edited = Fact("P36", "France", "Paris", "f0")
    firsts = {q.fact_id: q for q in [
        Query("f0", "P36", "France", "Paris", "the capital of France is", 0),       # itself
        Query("f1", "P1376", "Paris", "France", "Paris is the capital of", 0),      # inverse
        Query("f2", "P30", "Lyon", "paris", "Lyon is in", 0),                       # same object (case differs)
        Query("f3", "P37", "france", "French", "the language of France is", 0),     # same subject
        Query("f4", "P36", "Italy", "Rome", "the capital of Italy is", 0),          # unrelated
        Query("f5", "P1412", "Dante", "Italian", "Dante spoke", 0),                 # unrelated
    ]}
    assert [q.fact_id for q in locality_pool(edited, firsts)] == ["f4", "f5"]


def test_run_edits_draws_unrelated_queries_only_from_the_locality_pool():
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    ids = lm.answer_token_ids("the capital of france is", "paris")

    def q(fid, subject, obj):
        return Query(fid, "P36", subject, obj, f"the capital of {subject} is", 0, answer_ids=tuple(ids),
                     target_id=ids[0], correct=True)

    edited = q("f0", "france", "paris")
    firsts = {x.fact_id: x for x in [edited, q("f1", "paris", "france"), q("f2", "lyon", "paris"),
                                     q("f3", "italy", "rome"), q("f4", "germany", "berlin")]}
    plan = FactEdit(Fact("P36", "france", "paris", "f0"), [edited], [], {"N_i": {(0, 1)}}, {"fact_id": "f0"})
    rows = run_edits(lm, [plan], firsts, tasks=("erase",), n_unrelated=10, ppl_texts=None, progress=False)
    assert rows[0]["n_unrelated"] == 2  # italy and germany; paris->france (inverse) and lyon->paris excluded
