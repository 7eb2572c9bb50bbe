"""Chapter 04's claim measurement on a toy: per-fact means of the queries, then the relation as the unit of
the interval with >= 8 relations (a relation-level null is not read as an effect), else the fact."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kqlib.book.chapters import ch04_dynamic_kn_selection as K

BOOT = dict(n_boot=400, seed=0)


def _syn(n_rel, per=6, queries=3, effect=0.0, seed=0):
    """|ΔAct| of the synapse set minus the control's: a relation effect N(0, 0.3²) shared by its facts (mean 0
    over relations) plus ``effect``; the queries of a fact repeat its value with small noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_rel):
        rel_eff = rng.normal(0, 0.3)
        for f in range(per):
            for q in range(queries):
                for s, v in (("synapse", 1.0 + rel_eff + effect + rng.normal(0, 0.01)), ("control", 1.0)):
                    rows.append(dict(model="m", relation=f"P{r}", fact_id=f"P{r}-{f}", pattern_index=q,
                                     alpha=0.0, set=s, abs_d_act=v))
    return pd.DataFrame(rows)


def test_paired_claim_resamples_relations_and_averages_queries_per_fact():
    syn = _syn(12)
    m = K.paired_claim(syn, "m", 0.0, "abs_d_act", "control", **BOOT)
    assert m["unit"] == "relations" and m["n"] == 12 and m["low"] < m["estimate"] < m["high"]
    per_fact = syn[syn["set"] == "synapse"].groupby("fact_id").abs_d_act.mean() - 1.0
    assert np.isclose(m["estimate"], per_fact.mean())
    assert m["mean_b"] == 1.0 and m["p"] is not None
    few = K.paired_claim(_syn(3), "m", 0.0, "abs_d_act", "control", **BOOT)
    assert few["unit"] == "facts" and few["n"] == 18 and "fewer than 8" in few["detail"]
    assert K.paired_claim(syn, "m", 2.0, "abs_d_act", "control", **BOOT) is None


def test_a_relation_level_null_is_rarely_an_effect_but_a_shift_is():
    hits = 0
    for s in range(30):
        m = K.paired_claim(_syn(12, seed=s), "m", 0.0, "abs_d_act", "control", n_boot=200, seed=s)
        hits += m["low"] > 0 or m["high"] < 0
    assert hits <= 7  # 30 nulls: 4 excluded 0 here; the fact-level interval excluded it in 19 of them
    m = K.paired_claim(_syn(12, effect=0.5), "m", 0.0, "abs_d_act", "control", **BOOT)
    assert m["low"] > 0
