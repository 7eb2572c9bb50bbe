"""kqlib.paper.cas_editing: splits, neuron selections, the per-fact editing loop (tiny model) and the tables."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from kqlib.paper.cas_editing import (ROW_COLUMNS, paired_gains, pick_new_object, run_cas_editing, select_neurons,
                               split_queries, table3)
from kqlib.paper.cas import cas_neurons, cas_scores
from kqlib.errors import ParameterError
from kqlib.paper.pararel import Fact, FactEntry, Query
from tiny import tiny_lm

TEMPLATES = ["the capital of {} is", "{} capital city is", "the city of {} which holds the capital is"]
FACTS = [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("england", "london")]
OBJECTS = {"P36": ["paris", "berlin", "rome", "london", "madrid"]}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one intra-op thread is ~10x faster than several on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dataset(lm, correct=(True, True, True)):
    out = []
    for n, (subj, obj) in enumerate(FACTS):
        fact = Fact("P36", subj, obj, f"uuid{n}")
        qs = []
        for i, tmpl in enumerate(TEMPLATES):
            prompt = tmpl.format(subj)
            qs.append(Query(fact.fact_id, "P36", subj, obj, prompt, i, answer_ids=tuple(lm.answer_token_ids(prompt, obj)),
                            target_id=lm.answer_token_ids(prompt, obj)[0], correct=correct[i]))
        out.append(FactEntry(fact, qs))
    return out


def test_split_queries_random_and_last():
    lm = tiny_lm("llama")
    qs = _dataset(lm)[0].queries
    edited, held = split_queries(qs, 1, "last")
    assert [q.pattern_index for q in edited] == [0, 1] and [q.pattern_index for q in held] == [2]
    e1, h1 = split_queries(list(reversed(qs)), 1, "random", seed=3)
    e2, h2 = split_queries(qs, 1, "random", seed=3)
    assert [q.pattern_index for q in h1] == [q.pattern_index for q in h2]  # seeded, order-independent
    assert len(e1) == 2 and not {q.pattern_index for q in e1} & {q.pattern_index for q in h1}
    with pytest.raises(ParameterError):
        split_queries(qs, 3)
    with pytest.raises(ParameterError):
        split_queries(qs, 1, "middle")


def test_select_neurons_definitions():
    s = torch.zeros(3, 2, 4)
    s[0, 0, 0], s[0, 1, 1] = 1.0, 0.5   # query 0: KNs (0,0), (1,1)
    s[1, 0, 0], s[1, 1, 2] = 2.0, 2.0   # query 1: KNs (0,0), (1,2)
    s[2, 0, 0], s[2, 0, 3] = 1.0, 0.9   # query 2: KNs (0,0), (0,3)
    assert select_neurons(s, "N_i", t=0.2) == {(0, 0), (1, 1)}
    assert select_neurons(s, "N_g", t=0.2) == {(0, 0), (1, 1), (1, 2), (0, 3)}
    # (0, 0) is 1.0 in every query after max-normalisation: μ = 1, σ = 0 -> the only CAS neuron
    assert select_neurons(s, "cas", beta1=1, beta2=1, cas_threshold=0.5) == {(0, 0)}
    assert select_neurons(s, "cas", beta1=1, beta2=1) == cas_neurons(cas_scores(s, 1, 1), 0.2)
    # β2 = 0: CAS = μ; a neuron strong in one query only survives a low threshold
    assert (1, 2) in select_neurons(s, "cas", beta2=0.0, cas_threshold=0.2)
    with pytest.raises(ParameterError):
        select_neurons(s, "N_x")
    with pytest.raises(ParameterError):
        select_neurons(s[0], "N_i")


def test_pick_new_object_differs_and_is_seeded():
    lm = tiny_lm("llama")
    prompt = "the capital of france is"
    target = lm.answer_token_ids(prompt, "paris")[0]
    a = pick_new_object(lm, prompt, target, OBJECTS["P36"], random.Random("x"))
    b = pick_new_object(lm, prompt, target, list(reversed(OBJECTS["P36"])), random.Random("x"))
    assert a == b and a[0] != "paris" and a[1] != target
    assert pick_new_object(lm, prompt, target, ["paris"], random.Random(0)) == (None, None)


def test_run_cas_editing_tiny(tmp_path):
    lm = tiny_lm("llama")
    ds = _dataset(lm)
    df = run_cas_editing(lm, ds, steps=2, objects=OBJECTS, n_unrelated=2, attribution_cache=tmp_path,
                         ppl_texts=["the capital of france is paris .", "birds live in the sea ."])
    assert list(df.columns) == ROW_COLUMNS
    assert len(df) == len(FACTS) * 3 * 2  # facts x selections x tasks
    assert set(df.selection) == {"cas", "N_i", "N_g"} and set(df.task) == {"erase", "update"}
    for m in ("rel", "gen", "loc", "avg"):
        assert df[m].between(0, 1).all(), m
    assert np.isfinite(df.dppl).all()
    assert (df.n_edited_queries == 2).all() and (df.n_heldout_queries == 1).all() and (df.n_unrelated == 2).all()
    # N_g ⊇ N_i, so it never selects fewer neurons
    wide = df[df.task == "erase"].pivot_table(index="fact_id", columns="selection", values="n_neurons")
    assert (wide["N_g"] >= wide["N_i"]).all()
    assert df[df.selection == "cas"].beta2.eq(1.0).all() and df[df.selection != "cas"].beta2.isna().all()
    # the weights are restored: a second run is identical
    again = run_cas_editing(lm, ds, steps=2, objects=OBJECTS, n_unrelated=2, attribution_cache=tmp_path,
                            ppl_texts=["the capital of france is paris .", "birds live in the sea ."])
    pd.testing.assert_frame_equal(df, again)

    # query filter: facts with too few correct queries are skipped
    few = _dataset(lm, correct=(True, False, False))
    assert run_cas_editing(lm, few, steps=2, objects=OBJECTS, attribution_cache=tmp_path, ppl_texts=None).empty
    assert len(run_cas_editing(lm, few, steps=2, objects=OBJECTS, attribution_cache=tmp_path, ppl_texts=None,
                               query_filter="all", selections=("N_i",), tasks=("erase",))) == len(FACTS)
    with pytest.raises(ParameterError):
        run_cas_editing(lm, ds, selections=("bogus",))

    # one edited query: the three selections coincide and are evaluated once (memo), with equal results
    one = run_cas_editing(lm, ds, steps=2, objects=OBJECTS, n_heldout=2, attribution_cache=tmp_path, ppl_texts=None,
                          tasks=("erase",))
    assert (one.n_edited_queries == 1).all()
    assert not one[one.selection == "cas"].reused.any() and one[one.selection != "cas"].reused.all()
    for _, g in one.groupby("fact_id"):
        assert g.n_neurons.nunique() == 1 and g.avg.nunique() == 1

    # tables
    classes = {("tiny-llama", f"uuid{n}"): ("K_C" if n < 2 else "K_I") for n in range(len(FACTS))}
    t3 = table3(df, classes=classes, n_boot=200)
    assert set(t3.group) == {"all", "K_C", "K_I"} and len(t3) == 3 * 3 * 2
    for m in ("rel", "gen", "loc", "avg"):
        ok = t3[m].notna()
        assert (t3.loc[ok, f"{m}_low"] <= t3.loc[ok, m] + 1e-12).all()
        assert (t3.loc[ok, m] <= t3.loc[ok, f"{m}_high"] + 1e-12).all()
    all_rows = t3[t3.group == "all"]
    assert (all_rows.facts == len(FACTS)).all()
    g = paired_gains(df, classes=classes, n_boot=200)
    assert set(g.baseline) == {"N_i", "N_g"} and len(g) == 2 * 2 * 3
    row = g[(g.task == "erase") & (g.baseline == "N_i") & (g.group == "all")].iloc[0]
    e = df[df.task == "erase"].pivot_table(index="fact_id", columns="selection", values="avg")
    assert row.gain == pytest.approx(float((e["cas"] - e["N_i"]).mean()))
    assert row.gain_low <= row.gain + 1e-12 <= row.gain_high + 2e-12


def test_table3_empty_group_is_nan():
    df = pd.DataFrame([dict(model="m", fact_id="a", task="erase", selection="cas", n_neurons=3, rel=1.0, gen=0.0,
                            loc=1.0, avg=2 / 3, dppl=0.1)])
    t3 = table3(df, classes={("m", "a"): "K_C"}, n_boot=50)
    ki = t3[t3.group == "K_I"].iloc[0]
    assert ki.facts == 0 and math.isnan(ki.avg) and math.isnan(ki.avg_low)


def test_a_fact_without_queries_is_skipped_by_both_edit_loops(tmp_path):
    """The two editing loops are one loop now: a fact with no query (possible in a hand-built dataset) is
    skipped by both (run_cas_editing raised ValueError from min() of an empty sequence before)."""
    from kqlib.paper.kl_editing import run_single_query_edits

    lm = tiny_lm("llama")
    data = _dataset(lm) + [FactEntry(Fact("P36", "spain", "madrid", "uuid-empty"), [])]
    cas = run_cas_editing(lm, data, steps=3, tasks=("erase",), selections=("N_i",), n_unrelated=2, objects=OBJECTS,
                          ppl_texts=None, attribution_cache=tmp_path, progress=False)
    assert "uuid-empty" not in set(cas.fact_id) and len(cas.fact_id.unique()) == len(FACTS)
    kn = {(f"uuid{n}", i): {(0, 1)} for n in range(len(FACTS)) for i in range(3)}
    kl = run_single_query_edits(lm, data, kn, tasks=("erase",), n_unrelated=2, objects=OBJECTS, ppl_texts=None,
                                progress=False)
    assert "uuid-empty" not in set(kl.fact_id)
