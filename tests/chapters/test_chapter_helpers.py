"""Library pieces behind the chapters: model ordering, K_none, claim 2 with two models, mass-matched control."""

from __future__ import annotations

import math
import numpy as np
import pandas as pd
import pytest
import torch

from kqlib.book.chapters import ch02_consistency_violins as K
from kqlib.paper.consistency import class_label_series
from kqlib.book.claims import verdicts as V
from kqlib.paper.consistency import class_labels
from kqlib.book.report import order_by_size

SIZES = {"smollm2-135m": {"parameters": 134_515_008, "non_embedding_parameters": 106_200_000, "mlp_neurons": 46_080},
         "gemma3-270m": {"parameters": 268_098_176, "non_embedding_parameters": 100_000_000, "mlp_neurons": 36_864}}


def test_smaller_model_is_ordered_by_mlp_neurons_not_parameters():
    assert order_by_size(SIZES)[0] == "gemma3-270m"
    assert order_by_size(SIZES, "parameters")[0] == "smollm2-135m"


def test_fact_without_any_knowledge_neuron_is_k_none_not_k_i():
    labels = class_labels([0.0, 0.1, 0.5], 0.3, union_size=[0, 4, 4])
    assert list(labels) == ["K_none", "K_I", "K_C"]
    cs = pd.DataFrame(dict(model="m", method="ig", fact_id=list("abc"), cs2=[0.0, 0.1, 0.5], union_size=[0, 4, 4]))
    assert list(class_label_series(cs, 0.3)) == ["K_none", "K_I", "K_C"]


def _cs(model, flags):
    rows = []
    for i, ki in enumerate(flags):
        for method in ("ig", "sig"):
            rows.append(dict(model=model, method=method, fact_id=f"{model}-{i}", cs2=0.1 if ki else 0.8,
                             union_size=3))
    return rows


def test_claim_2_difference_of_shares_with_an_interval_over_facts():
    p = dict(cs_kind="cs2", static_threshold=0.3)
    # the model with fewer MLP neurons (gemma) has the lower K_I share: 20 % vs 80 % over 30 facts each
    cs = pd.DataFrame(_cs("gemma3-270m", [1] * 6 + [0] * 24) + _cs("smollm2-135m", [1] * 24 + [0] * 6))
    m = K.model_order_claim(cs, SIZES, **p)
    assert m["estimate"] == pytest.approx(0.2 - 0.8) and m["low"] < m["estimate"] < m["high"] < 0 and m["n"] == 30
    row = V.claim_row("model_order", "all", m["estimate"], m["low"], m["high"], m["n"], detail=m["detail"])
    assert row["verdict"] == V.HOLDS and "gemma3-270m" in row["this_run"] and "by parameters" in row["this_run"]
    # ordering by parameters would have reversed the comparison: the claim would "differ"
    swapped = {k: dict(v, mlp_neurons=v["parameters"]) for k, v in SIZES.items()}
    w = K.model_order_claim(cs, swapped, **p)
    assert V.judge("model_order", w["estimate"], w["low"], w["high"], w["n"]).label == V.DIFFERS
    one = K.model_order_claim(cs[cs.model == "gemma3-270m"], {"gemma3-270m": SIZES["gemma3-270m"]}, **p)
    assert V.judge("model_order", why_not=one["why_not"]).label == V.NOT_MEASURABLE and "two models" in one["why_not"]


def test_mass_matched_control_moves_as_much_attention_as_the_synapses():
    from kqlib.core.attention import random_non_synapses
    from kqlib.paper.synapses import mass_matched_non_synapses

    torch.manual_seed(0)
    row = torch.softmax(torch.randn(6, 4, 12) * 3, -1).double()
    syn = {(l, h, int(row[l, h].argmax())) for l, h in ((0, 0), (1, 2), (3, 1), (5, 3))}
    mass = lambda s: sum(float(row[e]) for e in s)  # noqa: E731
    matched = mass_matched_non_synapses(row, syn, seed=1)
    rand = random_non_synapses(row.shape, syn, len(syn), seed=1)
    assert len(matched) == len(syn) and not matched & syn
    assert abs(mass(matched) - mass(syn)) < 0.25 * mass(syn) < abs(mass(rand) - mass(syn))
    assert matched == mass_matched_non_synapses(row, syn, seed=1)  # seeded


def test_gen_gap_is_stratified_by_relation():
    """Class confounded with the relation (P1 all K_C with high Gen, P2 all K_I with low Gen): a pooled gap of
    +0.8 would be the relation's, not the class's; within relations there is nothing to compare."""
    import pandas as pd

    from kqlib.book.chapters.ch01_kl_reexamination import gen_gap

    rows = [dict(model="m", task="erase", relation=r, fact_id=f"{r}_{i}", gen=g)
            for r, g in (("P1", 0.9), ("P2", 0.1)) for i in range(4)]
    edits = pd.DataFrame(rows)
    classes = {("m", f): ("K_C" if f.startswith("P1") else "K_I") for f in edits.fact_id}
    out = gen_gap(edits, classes, "m")
    assert "confounded with the relation" in out["why_not"]
    # both classes within each of 6 relations, K_C 0.2 above K_I everywhere, relations at different levels
    rows = [dict(model="m", task="erase", relation=f"P{r}", fact_id=f"P{r}_{c}_{i}", gen=r / 10 + (0.2 if c == "C" else 0))
            for r in range(6) for c in "CI" for i in range(2)]
    edits = pd.DataFrame(rows)
    classes = {("m", f): f"K_{f.split('_')[1]}" for f in edits.fact_id}
    out = gen_gap(edits, classes, "m")
    assert out["estimate"] == pytest.approx(0.2) and out["n"] == 6 and out["unit"] == "relations"
