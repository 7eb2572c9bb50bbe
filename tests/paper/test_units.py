"""The resampling unit of a claim (relation vs fact) and within-stratum class differences, on toys whose
answer is known: the statistic must tell the effect from the data's shape."""

from __future__ import annotations

import numpy as np

from kqlib.paper.intervals import MIN_RELATIONS, unit_interval
from kqlib.paper.strata import within_stratum_gap


def _relation_null(rng, n_rel=12, per=8, shift=0.0):
    """Per-fact values whose population mean is ``shift``: a relation effect N(0, 1) shared by its facts plus
    fact noise N(0, 0.3²)."""
    rel = np.repeat([f"P{r}" for r in range(n_rel)], per)
    v = shift + np.repeat(rng.normal(0, 1, n_rel), per) + rng.normal(0, 0.3, n_rel * per)
    return v, rel


def test_unit_interval_with_relations_keeps_its_level_where_the_fact_does_not():
    rng = np.random.default_rng(1)
    miss = {"relations": 0, "facts": 0}
    sims = 80
    for s in range(sims):
        v, rel = _relation_null(rng)
        for key, min_rel in (("relations", MIN_RELATIONS), ("facts", 10_000)):
            m = unit_interval(v, rel, n_boot=300, seed=s, min_relations=min_rel)
            assert m["unit"] == key
            miss[key] += not (m["low"] <= 0.0 <= m["high"])
    # facts of one relation are not independent: the fact-level interval misses the true mean far too often;
    # the relation-level one misses near its nominal 5 % (a percentile interval over 12 relations runs a little
    # narrow, hence the margin)
    assert miss["facts"] / sims > 0.4
    assert miss["relations"] / sims < 0.25 and miss["facts"] > 2 * miss["relations"]


def test_unit_interval_finds_a_real_shift_and_says_its_unit():
    rng = np.random.default_rng(2)
    v, rel = _relation_null(rng, shift=2.0)
    m = unit_interval(v, rel, n_boot=500, seed=0, test=True)
    assert m["unit"] == "relations" and m["n"] == 12 and m["low"] > 0
    assert m["p"] is not None and m["p"] < 0.05  # Wilcoxon over the 12 relation means
    assert np.isclose(m["estimate"], v.mean())
    few = unit_interval(v[:40], rel[:40], n_boot=200, seed=0)
    assert few["unit"] == "facts" and few["n"] == 40 and "fewer than 8" in few["detail"]
    empty = unit_interval([], [], n_boot=10)
    assert empty["estimate"] is None and empty["n"] == 0


def _confounded(rng, n_rel=10, per=10, effect=0.0):
    """Gains set by the relation; relations with a high gain are mostly class "I", low ones mostly "C"; the
    class itself adds ``effect``."""
    vals, labels, strata = [], [], []
    for r in range(n_rel):
        base = r / n_rel  # the relation's gain
        p_i = 0.1 + 0.8 * r / (n_rel - 1)  # the relation's share of class I
        for f in range(per):
            lab = "I" if (f + 0.5) / per < p_i else "C"
            vals.append(base + (effect if lab == "I" else 0.0) + rng.normal(0, 0.02))
            labels.append(lab)
            strata.append(f"P{r}")
    return np.array(vals), np.array(labels), np.array(strata)


def test_within_stratum_gap_removes_a_class_confounded_with_the_relation():
    rng = np.random.default_rng(3)
    v, lab, st = _confounded(rng)
    naive = v[lab == "I"].mean() - v[lab == "C"].mean()
    r = within_stratum_gap(v, lab, st, "I", "C", n_boot=1000, seed=0)
    assert naive > 0.25  # the pooled difference is the relations' difference
    assert abs(r["estimate"]) < 0.03 and r["low"] < 0 < r["high"]
    assert r["n"] == r["n_strata"] == 10
    v, lab, st = _confounded(rng, effect=0.1)
    r = within_stratum_gap(v, lab, st, "I", "C", n_boot=1000, seed=0)
    assert abs(r["estimate"] - 0.1) < 0.03 and r["low"] > 0


def test_within_stratum_gap_not_measurable_when_no_stratum_holds_both_classes():
    v = np.array([0.1, 0.2, 0.5, 0.6])
    r = within_stratum_gap(v, ["C", "C", "I", "I"], ["P1", "P1", "P2", "P2"], "I", "C")
    assert "confounded" in r["why_not"]
    assert "no unit" in within_stratum_gap(v, ["C"] * 4, ["P1"] * 4, "I", "C")["why_not"]
    named = within_stratum_gap(v, ["C", "C", "I", "I"], ["P1", "P1", "P2", "P2"], "I", "C", stratum_name="relation")
    assert "confounded with the relation" in named["why_not"]
    # strata of one relation across models are drawn together: n counts the clusters
    r = within_stratum_gap(v.tolist() * 2, ["C", "I"] * 4, [("a", "P1"), ("a", "P1"), ("a", "P2"), ("a", "P2"),
                                                            ("b", "P1"), ("b", "P1"), ("b", "P2"), ("b", "P2")],
                           "I", "C", clusters=["P1", "P1", "P2", "P2"] * 2, n_boot=100)
    assert r["n_strata"] == 4 and r["n"] == 2
