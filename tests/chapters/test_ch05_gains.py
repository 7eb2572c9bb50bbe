"""Chapter 05's claims on toy edit tables: the K_C-vs-K_I CAS gain within relations (|E| = 1 facts out), the
gain by |E|, and the relation as the resampling unit of the gain claims."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kqlib.book.chapters import ch05_cas_editing as K

BOOT = dict(n_boot=500, seed=0)


def _edits(effect=0.0, n_rel=10, per=8, one_e=0, seed=0, models=("m",)):
    """Toy edits: a fact's CAS − N_i gain (Avg) is its relation's (r / n_rel) plus ``effect`` for K_I; relations
    with a high gain hold mostly K_I facts (the class is confounded with the relation). ``one_e`` extra K_C
    facts per relation have |E| = 1 (CAS = N_i: gain 0)."""
    rng = np.random.default_rng(seed)
    rows, classes = [], {}
    for model in models:
        for r in range(n_rel):
            p_i = 0.1 + 0.8 * r / (n_rel - 1)
            for f in range(per + one_e):
                fid, single = f"P{r}-{f}", f >= per
                cls = "K_C" if single or (f + 0.5) / per >= p_i else "K_I"
                gain = 0.0 if single else r / n_rel + (effect if cls == "K_I" else 0.0) + rng.normal(0, 0.02)
                classes[(model, fid)] = cls
                for task in ("erase", "update"):
                    base = 0.3 + rng.normal(0, 0.01)
                    for sel, v in (("N_i", base), ("N_g", base), ("cas", base + gain)):
                        rows.append(dict(model=model, fact_id=fid, relation=f"P{r}", selection=sel, task=task,
                                         avg=v, gen=v, n_edited_queries=1 if single else 3))
    return pd.DataFrame(rows), classes


def test_small_kc_gain_is_not_made_by_the_relation():
    edits, classes = _edits(one_e=2)
    fg = K.fact_gains(edits, classes)
    naive = fg[fg["class"] == "K_I"].gain.mean() - fg[fg["class"] == "K_C"].gain.mean()
    m = K.small_kc_claim(edits, classes, **BOOT)
    assert naive > 0.25  # pooled over relations, K_I gains far more
    assert abs(m["estimate"]) < 0.03 and m["low"] < 0 < m["high"] and m["unit"] == "relations"
    assert "20 fact(s) with |E| = 1 left out (20 K_C, 0 K_I)" in m["detail"]
    edits, classes = _edits(effect=0.1)
    m = K.small_kc_claim(edits, classes, **BOOT)
    assert abs(m["estimate"] - 0.1) < 0.03 and m["low"] > 0


def test_small_kc_gain_not_measurable_when_the_class_is_the_relation():
    edits, classes = _edits(n_rel=2, per=4)
    classes = {k: ("K_I" if edits[edits.fact_id == k[1]].relation.iloc[0] == "P1" else "K_C") for k in classes}
    m = K.small_kc_claim(edits, classes, **BOOT)
    assert "confounded" in m["why_not"] and "|E| = 1 left out" in m["why_not"]


def test_gain_by_e_marks_the_single_query_facts():
    edits, classes = _edits(one_e=1)
    t = K.gain_by_e(edits, classes, **BOOT)
    one = t[(t.n_edited == 1) & (t.group == "all")].iloc[0]
    assert one.left_out and one.facts == 10 and one.gain == 0.0
    three = t[(t.n_edited == 3) & (t.group == "all")].iloc[0]
    assert not three.left_out and three.facts == 80 and three.relations == 10


def test_fact_gains_average_the_tasks_per_fact_and_pool_models():
    edits, classes = _edits(models=("a", "b"), n_rel=3, per=2)
    fg = K.fact_gains(edits, classes, metric="avg", baseline="N_g")
    assert len(fg) == 12 and set(fg.model) == {"a", "b"}
    one = edits[(edits.model == "a") & (edits.fact_id == "P1-0")]
    want = one[one.selection == "cas"].avg.mean() - one[one.selection == "N_g"].avg.mean()
    assert np.isclose(fg[(fg.model == "a") & (fg.fact_id == "P1-0")].gain.iloc[0], want)
