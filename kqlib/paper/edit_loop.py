"""The one edit loop: erase / update a fact's selected neurons and measure Rel, Gen, Loc, Avg, ΔPPL.

Both editing experiments are this loop with different *plans*: Table 2 (:mod:`kqlib.paper.kl_editing`, one selection
``N_i`` = the KNs of one query) and Table 3 (:mod:`kqlib.paper.cas_editing`, selections CAS / N_i / N_g over a set of
edited queries). A :class:`FactEdit` says which queries are edited (Rel), which are its neighbours (Gen) and
which neuron set each selection edits. For every plan the loop draws, the same way for every selection:

* unrelated queries (Loc): the first queries of ``n_unrelated`` other facts, ``random.Random(f"{seed}-{fact_id}")``,
  drawn from :func:`locality_pool`: facts that share no entity with the edited fact (not its object, not its
  subject, not its inverse such as P36 France→Paris vs P1376 Paris→France), since an edit may rightly change them;
* the new object o' of an update: :func:`pick_new_object` on the first edited query,
  ``random.Random(f"{seed}-{fact_id}-new")`` over the relation's other objects;

then evaluates each (selection, task) with :func:`kqlib.paper.editing.evaluate_edit` (weights restored bit-exactly).
An edit that depends on exactly the same things as an earlier one (task, neuron set, queries, o', λ, texts)
is taken from ``edit_memo`` (``reused=True``). Every evaluated edit is also stored on disk, keyed by content
(:func:`edit_key`: the model's fingerprint, the task, the neuron set, the queries, o', λ1, λ2, the texts), in an
:class:`~kqlib.runs.cache.AttributionCache` under ``$KQLIB_CACHE/edits`` (atomic, validated writes), so an
interrupted chapter resumes its edits; ``edit_cache=False`` turns that off.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from kqlib.core.models import cache_root
from kqlib.errors import ParameterError
from kqlib.paper import editing
from kqlib.paper.pararel import QUERY_FILTERS, check_query_filter, load_facts  # noqa: F401 (QUERY_FILTERS re-exported)
from kqlib.runs.cache import AttributionCache
from kqlib.runs.progress import Progress

TASKS = ("erase", "update")
EDIT_CACHE_VERSION = 1  # bump when evaluate_edit's numbers change meaning
RESULT_KEYS = ("rel", "gen", "loc", "avg", "dppl", "rel_before", "gen_before", "dprob", "dprob_neighbors",
               "dprob_new", "ppl_before", "ppl_after")


@dataclass
class FactEdit:
    """One fact's edit plan. ``selections``: name -> neuron set, in order; ``columns``: the row columns of the
    fact; ``selection_columns``: extra columns per selection (e.g. CAS's β)."""

    fact: object
    edited: list
    neighbors: list
    selections: dict
    columns: dict
    selection_columns: dict = field(default_factory=dict)


def pick_new_object(lm, prompt: str, target_id: int, objects: Sequence[str], rng: random.Random):
    """``(o', first token id)``: the first object of a seeded shuffle of ``objects`` whose first token after
    ``prompt`` differs from ``target_id``; ``(None, None)`` when there is none."""
    pool = sorted(set(objects))
    for cand in rng.sample(pool, len(pool)):
        ids = lm.answer_token_ids(prompt, cand)
        if ids and ids[0] != target_id:
            return cand, int(ids[0])
    return None, None


def _relation_objects(relation: str) -> list[str]:

    return sorted({f.obj for f in load_facts(relation)})


def object_resolver(objects=None) -> Callable[[str], list[str]]:
    """``relation -> candidate new objects``: ``objects`` may be None (every object of the relation in ParaRel,
    read once per relation), a callable, or a mapping relation -> objects."""
    if callable(objects):
        return objects
    if objects is not None:
        return lambda rel: list(objects.get(rel, ()))
    cache: dict[str, list[str]] = {}

    def objects_for(rel: str) -> list[str]:
        if rel not in cache:
            cache[rel] = _relation_objects(rel)
        return cache[rel]

    return objects_for


def check_edit_options(tasks: Sequence[str], query_filter: str) -> None:
    """Refuse an unknown task or query filter (before any edit)."""
    for task in tasks:
        if task not in TASKS:
            raise ParameterError(f"unknown task {task!r}; choose from {TASKS}")
    check_query_filter(query_filter)


def _entities(subject: str, obj: str) -> set[str]:
    return {subject.strip().casefold(), obj.strip().casefold()}


def locality_pool(fact, firsts: dict) -> list:
    """The candidate unrelated queries of ``fact``: the queries of ``firsts`` (``{fact_id: query}``) of other facts
    whose {subject, object} is disjoint from the fact's (case-insensitive). That excludes facts with the same
    object (two random P30 facts share it 56 % of the time), the same subject, and inverse facts (subject and
    object swapped, e.g. P36 / P1376)."""
    mine = _entities(fact.subject, fact.obj)
    return [q for fid, q in firsts.items() if fid != fact.fact_id and not (_entities(q.subject, q.obj) & mine)]


def first_queries(entries) -> dict:
    """``{fact_id: its first query by pattern index}`` for the entries that have queries (in entry order)."""
    return {e.fact.fact_id: min(e.queries, key=lambda q: q.pattern_index) for e in entries if e.queries}


def edit_key(fingerprint: str, task: str, neurons, edited, neighbors, unrelated, new_id, lambda1: float,
             lambda2: float, texts) -> str:
    """sha256 over everything an edit's result depends on (JSON, sorted neuron set, version)."""

    fields = {"model": fingerprint, "task": task, "neurons": sorted([list(map(int, n)) for n in neurons]),
              "edited": [list(q) for q in edited], "neighbors": [list(q) for q in neighbors],
              "unrelated": [list(q) for q in unrelated], "new": new_id, "lambda1": float(lambda1),
              "lambda2": float(lambda2), "texts": list(texts), "version": EDIT_CACHE_VERSION}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=int).encode()).hexdigest()


def _encode(result: dict):
    """:data:`RESULT_KEYS` as a ``[3, K]`` float64 tensor: values (NaN for None), is-None and is-int flags."""
    vals = [result[k] for k in RESULT_KEYS]
    return torch.tensor([[math.nan if v is None else float(v) for v in vals],
                         [float(v is None) for v in vals],
                         [float(isinstance(v, int) and not isinstance(v, bool)) for v in vals]], dtype=torch.float64)


def _decode(t) -> dict | None:
    if t is None or tuple(t.shape) != (3, len(RESULT_KEYS)):
        return None
    return {k: None if t[1, i] else (int(t[0, i]) if t[2, i] else float(t[0, i])) for i, k in enumerate(RESULT_KEYS)}


def edit_store(edit_cache):
    """The on-disk store of edits: None (off) for ``False``; ``$KQLIB_CACHE/edits`` for ``None``/``True``; else the
    given :class:`~kqlib.runs.cache.AttributionCache` or folder."""

    if edit_cache is False:
        return None
    if isinstance(edit_cache, AttributionCache):
        return edit_cache
    if edit_cache is None or edit_cache is True:

        edit_cache = cache_root() / "edits"
    return AttributionCache(edit_cache)


def run_edits(lm, plans: Sequence[FactEdit], firsts: dict, *, tasks: Sequence[str] = TASKS, n_unrelated: int = 10,
              lambda1: float = 1.0, lambda2: float = 8.0, seed: int = 0, objects=None,
              ppl_texts: Sequence[str] | None = editing.DEFAULT_PPL_TEXTS, eval_cache: dict | None = None,
              edit_memo: dict | None = None, model_name: str = "model", desc: str = "editing",
              progress: bool = True, edit_cache=None) -> list[dict]:
    """Rows (dicts) for every plan x selection x task: the plan's columns, ``new_obj``, ``n_unrelated``, the
    selection's columns, ``selection``, ``task``, ``n_neurons``, :data:`RESULT_KEYS` and ``reused``. Update rows
    are absent for a fact with no usable o'. ``firsts``: :func:`first_queries` of the pool of unrelated facts.
    ``edit_cache``: where evaluated edits are kept on disk (:func:`edit_store`; needs ``lm.fingerprint``)."""
    eval_cache = {} if eval_cache is None else eval_cache
    edit_memo = {} if edit_memo is None else edit_memo
    texts = tuple(ppl_texts) if ppl_texts else ()
    objects_for = object_resolver(objects)
    fingerprint = getattr(lm, "fingerprint", None)
    store = edit_store(edit_cache) if isinstance(fingerprint, str) else None
    n_sel = max((len(p.selections) for p in plans), default=0)
    bar = Progress(len(plans) * n_sel * len(tasks), desc, "edit", enabled=progress)
    rows = []
    for plan in plans:
        fact = plan.fact
        others = locality_pool(fact, firsts)
        unrel = random.Random(f"{seed}-{fact.fact_id}").sample(others, min(len(others), int(n_unrelated)))
        unrelated = [(q.prompt, q.target_id) for q in unrel if q.target_id is not None]
        edited = [(q.prompt, q.target_id) for q in plan.edited]
        neighbors = [(q.prompt, q.target_id) for q in plan.neighbors]
        q0 = plan.edited[0]
        new_obj, new_id = None, None
        if "update" in tasks:
            new_obj, new_id = pick_new_object(lm, q0.prompt, q0.target_id,
                                              [o for o in objects_for(fact.relation) if o != fact.obj],
                                              random.Random(f"{seed}-{fact.fact_id}-new"))
        for sel, kns in plan.selections.items():
            for task in tasks:
                if task == "update" and new_id is None:
                    bar.step()  # no usable new object: nothing to update
                    continue
                key = (model_name, task, frozenset(kns), tuple(edited), tuple(neighbors), tuple(unrelated),
                       new_id if task == "update" else None, float(lambda1), float(lambda2), texts)
                reused = key in edit_memo
                disk_key = None
                if not reused and store is not None:
                    disk_key = edit_key(fingerprint, task, kns, edited, neighbors, unrelated,
                                        new_id if task == "update" else None, lambda1, lambda2, texts)
                    hit = _decode(store.get(disk_key))
                    if hit is not None:
                        edit_memo[key] = hit
                if key not in edit_memo:
                    if task == "erase":
                        factory = (lambda k=kns: editing.erase_neurons(lm, k))
                    else:
                        factory = (lambda k=kns: editing.update_neurons(lm, k, q0.target_id, new_id, lambda1,
                                                                        lambda2))
                    res = editing.evaluate_edit(lm, factory, edited, neighbors, unrelated, texts or None, task=task,
                                                new_target_id=new_id if task == "update" else None,
                                                cache=eval_cache)
                    edit_memo[key] = {k: res[k] for k in RESULT_KEYS}
                    if disk_key is not None:
                        store.put(disk_key, _encode(edit_memo[key]), meta={"task": task, "model": model_name})
                rows.append({**plan.columns, "new_obj": new_obj, "n_unrelated": len(unrelated),
                             **plan.selection_columns.get(sel, {}), "selection": sel, "task": task,
                             "n_neurons": len(kns), **edit_memo[key], "reused": reused})
                bar.step()
    bar.close()
    return rows
