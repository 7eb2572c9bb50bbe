"""Editing through the knowledge neurons of ONE query (paper §3.3, Table 2): does an edit generalize?

If knowledge localization held, the knowledge neurons (KNs) of any one query of a fact would be the fact's
neurons, so editing them would change the answer of every neighbor query (paraphrase) too. For each fact
with usable queries q_1..q_k (sorted by pattern index):

* the **edited query** is the first usable one, q_e; its KN set N_e comes from ``kn_sets`` (e.g.
  ``Localization.sets(method, model=...)``: ``{(fact_id, pattern_index): {(layer, neuron), ...}}``), the same
  sets that the consistency scores are computed from;
* its **neighbors** are all the other usable queries of the fact: Gen is measured on them;
* **unrelated** queries are the first queries of ``n_unrelated`` other facts of the dataset (a seeded draw per
  fact, ``random.Random(f"{seed}-{fact_id}")``, the draw of :func:`kqlib.paper.cas_editing.run_cas_editing`): Loc;
* **erase**: the value vectors of N_e set to 0; **update**: Dai et al.'s v ← v − λ1'e(o) + λ2'e(o') to another
  object o' of the relation (seeded: :func:`kqlib.paper.edit_loop.pick_new_object`).

Rel (on q_e), Gen, Loc, Avg and ΔPPL come from :func:`kqlib.paper.editing.evaluate_edit` (weights restored
bit-exactly after each edit). ``query_filter="correct"`` keeps only the queries the unedited model answers
(top-1), so that an erasure success on a neighbor is a change made by the edit and not a query the model got
wrong anyway; ``"all"`` keeps every query with an answer token.

This is the N_i selection of :mod:`kqlib.paper.cas_editing` with one edited query and every other query held out;
``run_cas_editing`` holds out a fixed number of queries per fact, which cannot express "all but one" for facts
with different numbers of paraphrases. Rows carry ``selection="N_i"`` so that
:func:`kqlib.paper.cas_editing.table3` aggregates them (mean and bootstrap CI per class)::

    rows = run_single_query_edits(lm, dataset, loc.sets("ig", model=lm.name), n_unrelated=10)
    t2 = table2(rows, classes)        # classes = {(model, fact_id): "K_C" | "K_I"}
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

import pandas as pd

from kqlib.paper import editing
from kqlib.paper.cas_editing import table3
from kqlib.paper.consistency import class_labels
from kqlib.paper.edit_loop import (  # noqa: F401 (re-exported)
    QUERY_FILTERS,
    RESULT_KEYS,
    TASKS,
    FactEdit,
    check_edit_options,
    first_queries,
    run_edits,
)

METRICS = ("rel", "gen", "loc", "avg", "dppl")

ROW_COLUMNS = ["model", "fact_id", "relation", "subject", "obj", "selection", "task", "n_queries",
               "edited_pattern", "neighbor_patterns", "n_neighbors", "n_neurons", "new_obj", "rel", "gen", "loc",
               "avg", "dppl", "rel_before", "gen_before", "dprob", "dprob_neighbors", "dprob_new", "ppl_before",
               "ppl_after", "n_unrelated"]


def usable_queries(entry, query_filter: str = "correct") -> list:
    """The fact's queries that can be edited/measured, sorted by pattern index: those with an answer token
    and, for ``query_filter="correct"``, answered top-1 by the unedited model."""
    check_edit_options((), query_filter)
    qs = [q for q in entry.queries if q.target_id is not None]
    if query_filter == "correct":
        qs = [q for q in qs if q.correct]
    return sorted(qs, key=lambda q: q.pattern_index)


def run_single_query_edits(lm, dataset, kn_sets: Mapping[tuple[str, int], set], *,
                           tasks: Sequence[str] = TASKS, query_filter: str = "correct", n_unrelated: int = 10,
                           fact_ids: Sequence[str] | None = None, n_facts: int | None = None,
                           lambda1: float = 1.0, lambda2: float = 8.0, seed: int = 0,
                           objects: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]] | None = None,
                           ppl_texts: Sequence[str] | None = editing.DEFAULT_PPL_TEXTS,
                           eval_cache: dict | None = None, model_name: str | None = None,
                           progress: bool = True) -> pd.DataFrame:
    """Edit every usable fact of ``dataset`` through the KNs of its first usable query; one row per (fact, task).

    ``dataset``: a :class:`kqlib.paper.pararel.Dataset` or any iterable of entries with ``.fact`` and ``.queries``
    (queries with ``fact_id``, ``pattern_index``, ``prompt``, ``target_id``, ``correct``). ``kn_sets``: the KN set of
    each ``(fact_id, pattern_index)``. A fact is skipped when it has fewer than two usable queries (no neighbor
    to generalize to), when the edited query's KN set is empty or missing (nothing to edit), or when it is not
    in ``fact_ids`` (None = every fact). ``n_facts``: a seeded sample of the remaining facts (None/0 = all).
    ``objects``: candidate new answers per relation, a mapping or a callable (default: every object of the
    relation in ParaRel). Update rows are absent for a fact without a usable o'. ``eval_cache``: a dict reused
    across calls on the same unedited model (memoises its predictions and PPL, see
    :func:`kqlib.paper.editing.evaluate_edit`). Unrelated queries are drawn from all facts of ``dataset``, skipped
    or not. Columns: :data:`ROW_COLUMNS` (``selection`` is always ``"N_i"``). ``progress``: edits done, rate
    and ETA (:class:`kqlib.runs.progress.Progress`).
    """
    check_edit_options(tasks, query_filter)
    name = model_name or getattr(lm, "name", "model")
    entries = sorted(dataset, key=lambda e: e.fact.fact_id)
    wanted = None if fact_ids is None else set(fact_ids)
    chosen = []
    for entry in entries:
        if wanted is not None and entry.fact.fact_id not in wanted:
            continue
        qs = usable_queries(entry, query_filter)
        if len(qs) < 2 or not kn_sets.get((entry.fact.fact_id, qs[0].pattern_index)):
            continue
        chosen.append((entry, qs))
    if n_facts:
        chosen = sorted(random.Random(f"{seed}-kl-facts").sample(chosen, min(len(chosen), int(n_facts))),
                        key=lambda x: x[0].fact.fact_id)
    plans = []
    for entry, qs in chosen:
        fact, q0, neighbors = entry.fact, qs[0], qs[1:]
        kns = set(kn_sets[(fact.fact_id, q0.pattern_index)])
        plans.append(FactEdit(fact, [q0], neighbors, {"N_i": kns}, dict(
            model=name, fact_id=fact.fact_id, relation=fact.relation, subject=fact.subject, obj=fact.obj,
            n_queries=len(entry.queries), edited_pattern=int(q0.pattern_index),
            neighbor_patterns=[int(q.pattern_index) for q in neighbors], n_neighbors=len(neighbors))))
    rows = run_edits(lm, plans, first_queries(entries), tasks=tasks, n_unrelated=n_unrelated, lambda1=lambda1,
                     lambda2=lambda2, seed=seed, objects=objects, ppl_texts=ppl_texts, eval_cache=eval_cache,
                     model_name=name, desc=f"KN editing {name}", progress=progress)
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def classes_from_cs(cs: pd.DataFrame, threshold: float | Mapping[str, float], kind: str = "cs2",
                    method: str | None = None) -> dict[tuple[str, str], str]:
    """``{(model, fact_id): "K_I" | "K_C"}``: K_I iff CS < θ. ``cs``: a consistency table (columns model,
    method, fact_id, ``kind``), restricted to ``method`` when given; ``threshold``: one θ or one per model."""
    part = cs if method is None else cs[cs["method"] == method]
    out = {}
    for r in part.itertuples():
        theta = threshold[r.model] if isinstance(threshold, Mapping) else threshold
        out[(r.model, r.fact_id)] = str(class_labels([float(getattr(r, kind))], float(theta))[0])
    return out


def table2(rows: pd.DataFrame, classes: Mapping[tuple[str, str], str], n_boot: int = 2000, level: float = 0.95,
           seed: int = 0) -> pd.DataFrame:
    """Table 2: mean (and percentile-bootstrap CI over facts) of Rel/Gen/Loc/Avg/ΔPPL per (model, task, class),
    via :func:`kqlib.paper.cas_editing.table3`. Groups: "all", "K_C", "K_I" (a class without edited facts: facts = 0,
    NaN metrics)."""

    out = table3(rows, classes=classes, metrics=METRICS, n_boot=n_boot, level=level, seed=seed)
    return out.drop(columns=["selection"], errors="ignore")
