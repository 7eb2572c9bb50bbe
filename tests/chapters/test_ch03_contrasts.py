"""Chapter 03's claim table on a toy mapping: own vs ∩ judged on queries with a non-empty ∩ (beside a random
subset of the union as large as ∩), so empty intersections (ΔProb = 0) cannot win it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kqlib.book.chapters import ch03_query_kn_mapping as K
from kqlib.paper.mapping import per_fact_effects

BOOT = dict(n_boot=500, seed=0)


def _mapping(n_rel=10, facts=2, queries=3, empty_share=2 / 3, seed=0):
    """K_I queries: own moves the answer by ~0.5; ∩ is empty (a no-op) for ``empty_share`` of the queries and
    otherwise moves it exactly as much as own; the size-matched union subset by ~0.1."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_rel):
        for f in range(facts):
            for q in range(queries):
                empty = (q + 0.5) / queries < empty_share
                effects = {"own": 0.5, "union": 0.6, "intersection": 0.0 if empty else 0.5,
                           "union_matched": 0.0 if empty else 0.1, "random": 0.05}
                for cond, eff in effects.items():
                    for op, sign in (("suppress", -1), ("enhance", 1)):
                        noisy = 0.0 if eff == 0 else eff + rng.normal(0, 0.02)
                        rows.append(dict(model="m", method="ig", relation=f"P{r}", fact_id=f"P{r}-{f}",
                                         pattern_index=q, group="K_I", condition=cond, operation=op,
                                         n_neurons=0 if eff == 0 else 3, p_before=0.5, p_after=0.5,
                                         d_prob=sign * noisy, flipped=False))
    return pd.DataFrame(rows)


def test_own_vs_intersection_is_not_won_by_empty_intersections():
    mapping = _mapping()
    c = K.claim_contrasts(K.with_avg(mapping), mapping, **BOOT).set_index("comparison")
    naive, fair = c.loc["own − ∩ (all queries)"], c.loc["own − ∩"]
    assert naive.estimate > 0.25 and naive.low > 0  # counting the no-ops, own "beats" ∩
    assert abs(fair.estimate) < 0.03 and fair.low < 0 < fair.high  # where ∩ exists, it does as much
    assert fair.queries == 20 and naive.queries == 60 and fair.unit == "relations" and fair.n == 10
    matched = c.loc["∩ − size-matched union subset"]
    assert matched.estimate > 0.3 and matched.low > 0 and matched.p < 0.05


def test_per_fact_effects_drop_queries_with_an_empty_intersection_and_keep_the_fact_as_unit():
    mapping = _mapping(n_rel=3, empty_share=0.5)
    long = K.with_avg(mapping)
    all_q = per_fact_effects(long, mapping)
    ne = per_fact_effects(long, mapping, nonempty_intersection=True)
    assert set(all_q.queries) == {3} and set(ne.queries) == {2}
    assert len(all_q) == len(ne) == 6 and set(ne.relation) == {"P0", "P1", "P2"}
    c = K.claim_contrasts(long, mapping, **BOOT)
    assert set(c.unit) == {"facts"} and all("fewer than 8" in d for d in c.detail)
