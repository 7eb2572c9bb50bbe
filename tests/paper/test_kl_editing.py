"""kqlib.paper.kl_editing: Table 2's one-query edits on a tiny model (query choice, skips, metrics, tables)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kqlib.paper import editing
from kqlib.errors import ParameterError
from kqlib.paper.kl_editing import ROW_COLUMNS, classes_from_cs, run_single_query_edits, table2, usable_queries
from kqlib.paper.pararel import Fact, FactEntry, Query
from tiny import tiny_lm

TEMPLATES = ["the capital of {} is", "{} capital city is", "the city of {} which holds the capital is"]
FACTS = [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("england", "london")]
OBJECTS = {"P36": ["paris", "berlin", "rome", "london", "madrid"]}
TEXTS = ["the capital of france is paris .", "birds live in the sea ."]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


def _dataset(lm, correct=(True, True, True)):
    out = []
    for n, (subj, obj) in enumerate(FACTS):
        fact = Fact("P36", subj, obj, f"uuid{n}")
        qs = []
        for i, tmpl in enumerate(TEMPLATES):
            prompt = tmpl.format(subj)
            ids = tuple(lm.answer_token_ids(prompt, obj))
            qs.append(Query(fact.fact_id, "P36", subj, obj, prompt, i, answer_ids=ids, target_id=ids[0],
                            correct=correct[i]))
        out.append(FactEntry(fact, qs))
    return out


def _kn_sets(n_per_query=3):
    """Deterministic, different KN sets per query (tiny llama: 3 layers x 48 neurons)."""
    return {(f"uuid{n}", i): {((n + i + j) % 3, (7 * n + 5 * i + 11 * j) % 48) for j in range(n_per_query)}
            for n in range(len(FACTS)) for i in range(len(TEMPLATES))}


def test_rows_match_a_direct_evaluate_edit(lm):
    ds, kns = _dataset(lm), _kn_sets()
    df = run_single_query_edits(lm, ds, kns, objects=OBJECTS, n_unrelated=2, ppl_texts=TEXTS)
    assert list(df.columns) == ROW_COLUMNS
    assert len(df) == len(FACTS) * 2 and set(df.task) == {"erase", "update"} and (df.selection == "N_i").all()
    assert (df.edited_pattern == 0).all() and (df.n_neighbors == 2).all() and (df.n_unrelated == 2).all()
    assert all(p == [1, 2] for p in df.neighbor_patterns)
    for m in ("rel", "gen", "loc", "avg"):
        assert df[m].between(0, 1).all(), m
    assert np.isfinite(df.dppl).all()
    assert (df.n_neurons == [len(kns[(f, 0)]) for f in df.fact_id]).all()

    # the erase row of fact 0 = evaluate_edit on (query 0 | queries 1, 2) with query 0's KNs
    row = df[(df.fact_id == "uuid0") & (df.task == "erase")].iloc[0]
    qs = ds[0].queries
    direct = editing.evaluate_edit(lm, lambda: editing.erase_neurons(lm, kns[("uuid0", 0)]),
                                   [(qs[0].prompt, qs[0].target_id)],
                                   [(q.prompt, q.target_id) for q in qs[1:]], [], TEXTS)
    assert row.rel == direct["rel"] and row.gen == direct["gen"] and row.dppl == pytest.approx(direct["dppl"])
    # manual Gen: share of neighbors whose top-1 is no longer the answer inside the edit
    with editing.erase_neurons(lm, kns[("uuid0", 0)]):
        changed = [int(lm.next_token_logits(q.prompt).argmax()) != q.target_id for q in qs[1:]]
    assert row.gen == pytest.approx(float(np.mean(changed)))
    # update rows: o' differs from o and is another object of the relation
    up = df[df.task == "update"]
    assert (up.new_obj != up.obj).all() and up.new_obj.isin(OBJECTS["P36"]).all()

    # weights restored: a second run is identical
    again = run_single_query_edits(lm, ds, kns, objects=OBJECTS, n_unrelated=2, ppl_texts=TEXTS)
    pd.testing.assert_frame_equal(df, again)


def test_query_choice_and_skips(lm):
    kns = _kn_sets()
    # "correct": query 0 is wrong -> the edited query is pattern 1, the only neighbor pattern 2
    ds = _dataset(lm, correct=(False, True, True))
    df = run_single_query_edits(lm, ds, kns, tasks=("erase",), objects=OBJECTS, ppl_texts=None)
    assert (df.edited_pattern == 1).all() and all(p == [2] for p in df.neighbor_patterns)
    assert (df.n_neurons == [len(kns[(f, 1)]) for f in df.fact_id]).all()
    assert [q.pattern_index for q in usable_queries(ds[0], "all")] == [0, 1, 2]
    # "all" keeps the wrong query
    df_all = run_single_query_edits(lm, ds, kns, tasks=("erase",), query_filter="all", objects=OBJECTS,
                                    ppl_texts=None)
    assert (df_all.edited_pattern == 0).all() and (df_all.n_neighbors == 2).all()
    # one correct query: no neighbor, skipped
    few = _dataset(lm, correct=(True, False, False))
    assert run_single_query_edits(lm, few, kns, objects=OBJECTS, ppl_texts=None).empty
    # an empty KN set of the edited query: skipped; fact_ids / n_facts select facts
    empty = {**kns, ("uuid1", 0): set()}
    df = run_single_query_edits(lm, _dataset(lm), empty, tasks=("erase",), objects=OBJECTS, ppl_texts=None)
    assert set(df.fact_id) == {"uuid0", "uuid2", "uuid3"}
    df = run_single_query_edits(lm, _dataset(lm), kns, tasks=("erase",), objects=OBJECTS, ppl_texts=None,
                                fact_ids=["uuid2"])
    assert list(df.fact_id) == ["uuid2"]
    df = run_single_query_edits(lm, _dataset(lm), kns, tasks=("erase",), objects=OBJECTS, ppl_texts=None,
                                n_facts=2, seed=1)
    assert df.fact_id.nunique() == 2
    # no usable new object: no update row
    df = run_single_query_edits(lm, _dataset(lm), kns, objects={"P36": []}, ppl_texts=None)
    assert set(df.task) == {"erase"} and df.new_obj.isna().all()
    with pytest.raises(ParameterError):
        run_single_query_edits(lm, ds, kns, tasks=("rewrite",))
    with pytest.raises(ParameterError):
        run_single_query_edits(lm, ds, kns, query_filter="some")


def test_classes_and_table2(lm):
    df = run_single_query_edits(lm, _dataset(lm), _kn_sets(), objects=OBJECTS, n_unrelated=2, ppl_texts=None)
    cs = pd.DataFrame([dict(model="tiny-llama", method=m, fact_id=f"uuid{n}", cs2=0.1 + 0.2 * n)
                       for n in range(len(FACTS)) for m in ("ig", "sig")])
    classes = classes_from_cs(cs, 0.4, method="ig")
    assert classes == {("tiny-llama", "uuid0"): "K_I", ("tiny-llama", "uuid1"): "K_I",
                       ("tiny-llama", "uuid2"): "K_C", ("tiny-llama", "uuid3"): "K_C"}
    assert classes_from_cs(cs, {"tiny-llama": 0.05}, method="ig") == {k: "K_C" for k in classes}
    t2 = table2(df, classes, n_boot=100)
    assert set(t2.group) == {"all", "K_C", "K_I"} and set(t2.task) == {"erase", "update"} and len(t2) == 6
    assert "selection" not in t2.columns
    for task in ("erase", "update"):
        for group, facts in (("K_I", ["uuid0", "uuid1"]), ("K_C", ["uuid2", "uuid3"])):
            r = t2[(t2.task == task) & (t2.group == group)].iloc[0]
            part = df[(df.task == task) & df.fact_id.isin(facts)]
            assert r.facts == 2 and r.gen == pytest.approx(part.gen.mean())
            assert r.gen_low - 1e-12 <= r.gen <= r.gen_high + 1e-12
    # a class without edited facts: facts = 0, NaN metrics
    t2 = table2(df, {k: "K_C" for k in classes}, n_boot=50)
    ki = t2[t2.group == "K_I"].iloc[0]
    assert ki.facts == 0 and math.isnan(ki.gen)
