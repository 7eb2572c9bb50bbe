"""From queries to knowledge-neuron sets: the data flow every chapter shares.

``localize(lm, queries, methods)`` attributes every query with every method (through the on-disk cache, so a
rerun or a later chapter recomputes nothing) and thresholds each query's scores into its knowledge-neuron
set N_q = {(l, i) : score_q[l, i] > t * max score_q}. The result is tidy: one row per knowledge neuron, plus
one row per (method, query) so that queries with an empty set still count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from kqlib.attribution import knowledge_neurons
from kqlib.runs.many import attribute_many

QUERY_COLUMNS = ["model", "method", "relation", "fact_id", "pattern_index", "prompt", "target_id"]


@dataclass
class Localization:
    """Knowledge neurons of many queries under several methods.

    ``neurons``: one row per (model, method, query, neuron) with its score and score / max.
    ``queries``: one row per (model, method, query) with ``n_neurons`` and the query's max score.
    """

    neurons: pd.DataFrame
    queries: pd.DataFrame
    params: dict = field(default_factory=dict)

    def sets(self, method: str, model: str | None = None) -> dict[tuple[str, int], set]:
        """``{(fact_id, pattern_index): {(layer, neuron), ...}}`` for one method (empty sets included)."""
        q = self.queries[self.queries.method == method]
        n = self.neurons[self.neurons.method == method]
        if model is not None:
            q, n = q[q.model == model], n[n.model == model]
        out = {(r.fact_id, int(r.pattern_index)): set() for r in q.itertuples()}
        for r in n.itertuples():
            out[(r.fact_id, int(r.pattern_index))].add((int(r.layer), int(r.neuron)))
        return out


def localize(lm, queries, methods=("ig",), *, steps: int | None = None, site: str = "post", t: float = 0.2,
             rule: str = "riemann", batch_size: int | None = None, cache=None, progress: bool = True,
             model_name: str | None = None, amig_baseline: torch.Tensor | None = None,
             executor: str | None = None, address: str | None = None, tol: float | None = None,
             threads: int | str | None = None) -> Localization:
    """Attribute ``queries`` (ParaRel :class:`~kqlib.paper.pararel.Query` objects) with each method and threshold.
    ``rule``/``steps``/``tol``: as in :func:`kqlib.attribute` (``steps`` only for fixed rules, ``tol`` only for
    ``adaptive``). ``threads``: as in :func:`kqlib.attribute_many` (local executor only).

    Cost: len(queries) x len(methods) attributions, each ~n_layers x steps path points (cached on disk).
    """
    name = model_name or lm.name
    neuron_rows, query_rows = [], []
    for method in methods:
        scores = attribute_many(lm, queries, method=method, steps=steps, site=site, rule=rule, tol=tol,
                                threads=threads if (executor or "local") == "local" else None,
                                batch_size=batch_size, executor=executor, address=address, cache=cache, progress=progress, desc=f"{name} {method}",
                                baseline=amig_baseline if method == "amig" else None)
        for q, s in zip(queries, scores):
            top = float(s.max())
            kns = knowledge_neurons(s, t)
            base = dict(model=name, method=method, relation=q.relation, fact_id=q.fact_id,
                        pattern_index=q.pattern_index, prompt=q.prompt, target_id=q.target_id)
            query_rows.append({**base, "n_neurons": len(kns), "max_score": top})
            for layer, neuron in sorted(kns):
                sc = float(s[layer, neuron])
                neuron_rows.append({**base, "layer": layer, "neuron": neuron, "score": sc, "rel_score": sc / top})
    neurons = pd.DataFrame(neuron_rows, columns=QUERY_COLUMNS + ["layer", "neuron", "score", "rel_score"])
    qframe = pd.DataFrame(query_rows, columns=QUERY_COLUMNS + ["n_neurons", "max_score"])
    params = dict(model=name, fingerprint=lm.fingerprint, methods=list(methods), steps=steps, rule=rule, site=site,
                  t=t, tol=tol)
    return Localization(neurons, qframe, params)


def query_scores(lm, queries, method: str = "ig", **kw) -> torch.Tensor:
    """Raw scores ``[n_queries, L, N]`` (from the cache when :func:`localize` ran with the same parameters)."""
    return attribute_many(lm, queries, method=method, progress=False, **kw)
