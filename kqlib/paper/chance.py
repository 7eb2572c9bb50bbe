"""Chance-corrected consistency: does a fact share more knowledge neurons across its phrasings than its
relation and its templates alone explain?

CS1/CS2 have no null: two phrasings of *different* facts asked with the same template share many knowledge
neurons (the relation's and the template's), and CS2 ≥ 1/k moves with the number k of phrasings. The test of
what knowledge localization asserts (the fact has neurons of its own) compares a fact with pseudo-facts:

* ``j_obs(f)`` = mean pairwise Jaccard of the KN sets of f's phrasings on its templates t_1..t_m,
  2/(m(m−1)) Σ_{i<j} J(N_{f,t_i}, N_{f,t_j});
* a pseudo-fact fills the same templates with *other* facts of the same relation (g_i ≠ f), a different one
  per template where the relation has enough (else repeated as little as possible): ``j_null`` = the mean of
  J(N_{g_i,t_i}, N_{g_j,t_j}) over its pairs i < j with g_i ≠ g_j (a pair of one other fact would bring that
  fact's own overlap into the null);
* ``delta_j(f)`` = j_obs(f) − mean over ``n_draws`` seeded pseudo-facts of j_null (a permutation null from the
  KN sets already computed: no new attribution); ``p_null`` = (1 + #{j_null ≥ j_obs}) / (n_draws + 1), one-sided.

Only f's templates that at least one other fact of the relation was asked with enter (m ≥ 2); with fewer than
:data:`MIN_OTHER_FACTS` other facts sharing them the fact gets NaN and a ``null_reason``. ``power`` is the per-fact test's power at a shift ``effect`` of the null (j_obs = j_null + δ).

With few distinct pseudo-facts (small relations, k = 2–3) the per-fact p is coarse and can be liberal: on
the hub-neuron toy of tests/paper/test_chance.py, 11 % (k = 2) and 9 % (k = 3) of null facts reach p < 0.05, about
5 % at k ≥ 4. Claim 1 is therefore decided by the population mean of delta_j (≈ 0 under that null at every k),
not by the share of significant facts.
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping

import numpy as np
import pandas as pd

from kqlib.errors import ParameterError

N_DRAWS = 200  # pseudo-facts per fact (at least 200 for a stable permutation p)
MIN_OTHER_FACTS = 3  # other facts of the relation sharing the templates: below this the null hardly varies
EFFECT = 0.05  # the shift (Jaccard) at which the per-fact test's power is reported; claims.toml's margin
CHANCE_COLUMNS = ["k_null", "n_null_facts", "j_obs", "j_null", "delta_j", "p_null", "power", "null_reason"]


def jaccard_matrix(sets) -> np.ndarray:
    """``J[i, j]`` = |N_i ∩ N_j| / |N_i ∪ N_j| of n sets (0 when both are empty), shape [n, n]."""
    sets = [set(s) for s in sets]
    items = {x: i for i, x in enumerate(sorted(set().union(*sets)) if sets else [])}
    m = np.zeros((len(sets), len(items)), dtype=np.float64)
    for r, s in enumerate(sets):
        m[r, [items[x] for x in s]] = 1.0
    inter = m @ m.T
    size = m.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _upper_mean(jm: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of J over the pairs i < j of each row of ``idx`` ([B, m] indices into ``jm``): shape [B]."""
    iu = np.triu_indices(idx.shape[1], 1)
    return jm[idx[:, iu[0]], idx[:, iu[1]]].mean(axis=1)


def _draw(cands: list[list[int]], n_draws: int, rng) -> np.ndarray:
    """``n_draws`` fillings of the slots ([B, m] candidate ids): in a random slot order, each slot takes a
    random candidate not used yet by this filling, or any of its candidates when all are used (a relation
    with fewer other facts than templates), so facts repeat as little as possible."""
    out = np.empty((int(n_draws), len(cands)), dtype=np.int64)
    for b in range(int(n_draws)):
        used: set = set()
        for slot in rng.permutation(len(cands)):
            free = [c for c in cands[slot] if c not in used] or cands[slot]
            out[b, slot] = free[int(rng.integers(len(free)))]
            used.add(int(out[b, slot]))
    return out


def _pseudo_means(jm: np.ndarray, idx: np.ndarray, who: np.ndarray) -> np.ndarray:
    """Mean of J over the pairs i < j of each filling whose two phrasings belong to different facts (``who``:
    [B, m] fact ids): a pair of the same other fact would carry that fact's own overlap into the null."""
    iu = np.triu_indices(idx.shape[1], 1)
    vals = jm[idx[:, iu[0]], idx[:, iu[1]]]
    keep = who[:, iu[0]] != who[:, iu[1]]
    n = keep.sum(axis=1)
    return np.where(n > 0, (vals * keep).sum(axis=1) / np.maximum(n, 1), np.nan)


def shift_power(null: np.ndarray, effect: float, alpha: float = 0.05) -> float:
    """Power of the one-sided permutation test at level α when the observed statistic is a null draw shifted
    by ``effect``: mean over b of [p(null_b + effect) ≤ α], p(x) = (1 + #{null ≥ x}) / (B + 1)."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    b = null.size
    if b == 0:
        return math.nan
    at_least = b - np.searchsorted(null, null + effect - 1e-12, side="left")
    return float(np.mean((1 + at_least) / (b + 1) <= alpha))


def _seed(seed: int, key: tuple) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(repr(key).encode())])


def chance_table(queries: pd.DataFrame, sets: Mapping[tuple, set], n_draws: int = N_DRAWS, seed: int = 0,
                 effect: float = EFFECT, alpha: float = 0.05) -> pd.DataFrame:
    """``delta_j`` and ``p_null`` per (model, method, fact_id).

    ``queries``: one row per query, columns [model, method, relation, fact_id, pattern_index]; ``sets``:
    ``{(model, method, fact_id, pattern_index): {(layer, neuron), ...}}`` (a missing key is an empty set).
    Returns [model, method, fact_id] + :data:`CHANCE_COLUMNS`; the draws are seeded per fact (by ``seed`` and
    the fact's key), so a fact's values do not depend on which other rows are in the frame's order."""
    if int(n_draws) < 1:
        raise ParameterError(f"n_draws must be >= 1, got {n_draws}")
    need = ["model", "method", "relation", "fact_id", "pattern_index"]
    missing = [c for c in need if c not in queries.columns]
    if missing:
        raise ParameterError(f"the queries frame lacks column(s) {missing} for the chance-corrected consistency")
    rows = []
    q = queries[need].drop_duplicates(["model", "method", "fact_id", "pattern_index"])
    for (model, method, relation), g in q.groupby(["model", "method", "relation"], sort=True, dropna=False):
        keys = [(model, method, f, int(t)) for f, t in zip(g.fact_id, g.pattern_index)]
        jm = jaccard_matrix([sets.get(k, set()) for k in keys])
        where = {(k[2], k[3]): i for i, k in enumerate(keys)}
        by_template: dict[int, list] = {}
        for f, t in where:
            by_template.setdefault(t, []).append(f)
        facts = sorted(set(g.fact_id), key=str)
        for f in facts:
            row = dict(model=model, method=method, fact_id=f, k_null=0, n_null_facts=0, j_obs=math.nan,
                       j_null=math.nan, delta_j=math.nan, p_null=math.nan, power=math.nan, null_reason="")
            temps = sorted(t for (ff, t) in where if ff == f)
            usable = [t for t in temps if any(o != f for o in by_template[t])]
            others = sorted({o for t in usable for o in by_template[t] if o != f}, key=str)
            row.update(k_null=len(usable), n_null_facts=len(others))
            if len(usable) < 2:
                row["null_reason"] = (f"fewer than 2 of its {len(temps)} template(s) were asked of another fact of "
                                      f"{relation}")
            elif len(others) < MIN_OTHER_FACTS:
                row["null_reason"] = (f"{len(others)} other fact(s) of {relation} share its templates (the null "
                                      f"needs {MIN_OTHER_FACTS})")
            else:
                code = {o: i for i, o in enumerate(others)}
                cands = [[code[o] for o in by_template[t] if o != f] for t in usable]
                draws = _draw(cands, int(n_draws), _seed(seed, (model, method, f)))
                idx = np.array([[where[(others[c], t)] for c, t in zip(d, usable)] for d in draws])
                null = _pseudo_means(jm, idx, draws)
                null = null[np.isfinite(null)]
                obs = float(_upper_mean(jm, np.array([[where[(f, t)] for t in usable]]))[0])
                row.update(j_obs=obs, j_null=float(null.mean()), delta_j=obs - float(null.mean()),
                           p_null=float((1 + np.sum(null >= obs - 1e-12)) / (null.size + 1)),
                           power=shift_power(null, effect, alpha))
            rows.append(row)
    return pd.DataFrame(rows, columns=["model", "method", "fact_id"] + CHANCE_COLUMNS)
