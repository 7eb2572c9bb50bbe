"""Query-KN mapping (paper §4.1): does a query's localization belong to the query or to the fact?

For a query q of a fact with neighbor queries q_1..q_k (q excluded), intervene at q's last position on

* ``own``          -- N_q, q's own knowledge neurons;
* ``union``        -- ∪_j N_{q_j};
* ``intersection`` -- ∩_j N_{q_j};
* ``union_matched`` -- as many neurons as the intersection, drawn at random from the union (control for the
  intersection's size; seeded; empty when the intersection is),
* ``random``       -- as many random neurons as ``own``, drawn from the same layers (control; seeded),

either suppressing (activation -> 0) or enhancing (activation x 2) them, and measure

    ΔProb = (p_after(o | q) - p_before(o | q)) / p_before(o | q)          (relative change of the answer)

and whether the top-1 prediction flips (suppress: away from o; enhance: to o from another token).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
import torch

from kqlib.core.hooks import scale_neurons
from kqlib.runs.progress import Progress

CONDITIONS = ("own", "union", "intersection", "union_matched", "random")
OPERATIONS = {"suppress": 0.0, "enhance": 2.0}


@dataclass(frozen=True)
class MappingQuery:
    prompt: str
    target_id: int
    own: frozenset
    neighbors: tuple  # tuple of frozensets, one per neighbor query


def condition_neurons(q: MappingQuery, n_layers: int, n_neurons: int, seed: int) -> dict[str, set]:
    """The neuron set of every condition for query ``q`` (random: same layer histogram as ``own``;
    union_matched: |∩| neurons of the union, a seeded draw)."""
    union = set().union(*q.neighbors) if q.neighbors else set()
    inter = set.intersection(*map(set, q.neighbors)) if q.neighbors else set()
    rng = random.Random(f"{seed}-{q.prompt}-{q.target_id}")
    rand: set = set()
    for layer in sorted(l for l, _ in q.own):
        while True:
            cand = (layer, rng.randrange(n_neurons))
            if cand not in q.own and cand not in rand:
                rand.add(cand)
                break
    pick = random.Random(f"{seed}-{q.prompt}-{q.target_id}-union")
    matched = set(pick.sample(sorted(union), len(inter)))
    return {"own": set(q.own), "union": union, "intersection": inter, "union_matched": matched, "random": rand}


@torch.no_grad()
def answer_prob(lm, prompt: str, target_id: int) -> tuple[float, int]:
    """``(p(target | prompt), top-1 token)`` at the next position."""
    a = lm.answer_probabilities([prompt], [target_id])
    return float(a["p"][0]), int(a["top1"][0])


def run_mapping(lm, queries: Iterable[MappingQuery], *, site: str = "post", seed: int = 0,
                operations: dict[str, float] = OPERATIONS, meta: Sequence[dict] | None = None,
                desc: str = "interventions", progress: bool = True) -> pd.DataFrame:
    """One row per (query, condition, operation): n_neurons, p_before, p_after, d_prob, flipped (with a
    progress line per query: each one is 1 + conditions × operations forward passes)."""
    rows = []
    queries = list(queries)
    bar = Progress(len(queries), desc, "query", enabled=progress)
    for n, q in enumerate(queries):
        p0, top0 = answer_prob(lm, q.prompt, q.target_id)
        sets = condition_neurons(q, lm.n_layers, lm.n_neurons, seed)
        for cond, neurons in sets.items():
            for op, factor in operations.items():
                if neurons:
                    with scale_neurons(lm, neurons, factor, site=site):
                        p1, top1 = answer_prob(lm, q.prompt, q.target_id)
                else:
                    p1, top1 = p0, top0
                if op == "suppress":
                    flipped = top0 == q.target_id and top1 != q.target_id
                else:
                    flipped = top0 != q.target_id and top1 == q.target_id
                rows.append({**(meta[n] if meta else {}), "condition": cond, "operation": op,
                             "n_neurons": len(neurons), "p_before": p0, "p_after": p1,
                             "d_prob": (p1 - p0) / p0 if p0 > 0 else float("nan"), "flipped": bool(flipped)})
        bar.step()
    bar.close()
    return pd.DataFrame(rows)


def mapping_queries(localization, method: str, model: str | None = None) -> tuple[list, list]:
    """Build :class:`MappingQuery` objects (and per-query metadata) from a :class:`Localization`."""
    sets = localization.sets(method, model)
    qf = localization.queries[localization.queries.method == method]
    if model is not None:
        qf = qf[qf.model == model]
    by_fact: dict[str, list] = {}
    for r in qf.itertuples():
        by_fact.setdefault(r.fact_id, []).append(r)
    out, meta = [], []
    for fact_id, rows in by_fact.items():
        for r in rows:
            own = frozenset(sets[(fact_id, int(r.pattern_index))])
            nbrs = tuple(frozenset(sets[(fact_id, int(o.pattern_index))]) for o in rows if o.pattern_index != r.pattern_index)
            if not nbrs:
                continue
            out.append(MappingQuery(r.prompt, int(r.target_id), own, nbrs))
            meta.append(dict(model=r.model, method=method, relation=r.relation, fact_id=fact_id,
                             pattern_index=int(r.pattern_index)))
    return out, meta


# ----------------------------------------------------------------------- chapter 03 (Figure 4)

UNIT = ["model", "method", "fact_id", "pattern_index"]
OPS = ["suppress", "enhance", "average"]
MAPPING_COLUMNS = ["model", "method", "relation", "fact_id", "pattern_index", "group", "condition", "operation",
                   "n_neurons", "p_before", "p_after", "d_prob", "flipped"]


def per_fact_effects(long: pd.DataFrame, mapping: pd.DataFrame, operation: str = "average",
                     nonempty_intersection: bool = False) -> pd.DataFrame:
    """Per (model, method, group, relation, fact_id): the mean ``d_prob`` of ``operation`` over the fact's
    queries, one column per condition, and ``queries`` (how many). ``long``: ``mapping`` with the "average"
    rows (:func:`kqlib.paper.stats.with_average`). ``nonempty_intersection``: only the queries whose
    neighbors' intersection is non-empty (an empty ∩ is a no-op, ΔProb = 0, which alone would make "own
    beats ∩")."""
    keys = ["model", "method", "group", "relation", "fact_id"]
    sup = mapping[(mapping.operation == "suppress") & (mapping.condition == "intersection")]
    info = sup[UNIT + ["group", "relation", "n_neurons"]].drop_duplicates(UNIT)
    if nonempty_intersection:
        info = info[info.n_neurons > 0]
    rows = long[long.operation == operation].drop(columns=["group", "relation"], errors="ignore")
    rows = rows.merge(info.drop(columns="n_neurons"), on=UNIT, how="inner")
    if not len(rows):
        return pd.DataFrame(columns=keys + ["queries"] + list(CONDITIONS))
    wide = rows.pivot_table(index=keys, columns="condition", values="d_prob", aggfunc="mean")
    n_q = rows.drop_duplicates(UNIT).groupby(keys).size().rename("queries")
    return pd.concat([n_q, wide.reindex(columns=list(CONDITIONS))], axis=1).reset_index()
