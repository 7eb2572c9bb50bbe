"""Editing with query localization: Consistency-Aware KN selection vs. the N_i / N_g baselines (paper §5, Table 3).

For each fact with queries q_1..q_k (its ParaRel paraphrases) the queries are split into

* **edited** queries E (|E| = k − ``n_heldout``): the only queries whose attributions a selection may use, and
  the queries on which Rel is measured;
* **held-out** queries H (``n_heldout`` of them, a seeded random draw or the last patterns): never seen by any
  selection; Gen is measured on them.

Neuron selections (all from the same cached per-query attribution scores s_q ``[L, N]``):

* ``"N_i"`` — the KNs of ONE edited query (the first of E by pattern index): {n : s_q(n) > t·max s_q};
* ``"N_g"`` — the union of the KNs of all edited queries: ∪_{q∈E} N_q;
* ``"cas"`` — Consistency-Aware Score over E (Eq. 7): a_q = s_q / max s_q, μ = mean_q a_q, σ = std_q a_q,
  CAS = β1·μ − β2·σ, selected by :func:`kqlib.paper.cas.cas_neurons` (``cas_method="static"``:
  CAS > ``cas_threshold``·max CAS; ``"otsu"``: Otsu's split of the positive CAS values).

Each selection is then erased (value vectors → 0) and updated (Dai's rule, o → o', o' another object of the same
relation, seeded) with :mod:`kqlib.paper.editing`; Rel on E, Gen on H, Loc on the first queries of other facts
(``n_unrelated``, the same for every selection of a fact), Avg and ΔPPL come from
:func:`kqlib.paper.editing.evaluate_edit`. The result is tidy: one row per (fact, selection, task).

    df = run_cas_editing(lm, dataset, method="ig", steps=20)
    t3 = table3(df, classes=cls)            # mean and bootstrap CI per (model, task, selection, group)
    g = paired_gains(df)                    # CAS − baseline, per fact, with a bootstrap CI
"""

from __future__ import annotations

import math
import random
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kqlib.paper import editing
from kqlib.attribution import knowledge_neurons
from kqlib.paper.cas import cas_neurons, cas_scores
from kqlib.paper.stats import bootstrap_ci
from kqlib.paper.edit_loop import (QUERY_FILTERS, TASKS, FactEdit, check_edit_options,  # noqa: F401 (re-exported)
                                   first_queries, object_resolver, pick_new_object, run_edits)
from kqlib.errors import ParameterError
from kqlib.paper.localization import query_scores

SELECTIONS = ("cas", "N_i", "N_g")
METRICS = ("rel", "gen", "loc", "avg", "dppl")
SPLITS = ("random", "last")

ROW_COLUMNS = ["model", "fact_id", "relation", "subject", "obj", "selection", "task", "beta1", "beta2",
               "cas_method", "cas_threshold", "n_queries", "n_edited_queries", "n_heldout_queries", "n_neurons",
               "new_obj", "rel", "gen", "loc", "avg", "dppl", "rel_before", "gen_before", "dprob",
               "dprob_neighbors", "dprob_new", "ppl_before", "ppl_after", "n_unrelated", "edited_patterns",
               "heldout_patterns", "reused"]


# ------------------------------------------------------------------------------------------ splits


def split_queries(queries: Sequence, n_heldout: int = 1, split: str = "random", seed: int | str = 0):
    """``(edited, heldout)``: ``n_heldout`` queries held out, the rest edited; both sorted by pattern index.

    ``split="random"``: a seeded draw (``random.Random(f"{seed}-{fact_id}-split")``); ``"last"``: the highest
    pattern indices. Raises :class:`ParameterError` unless 1 <= n_heldout < len(queries).
    """
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, got {split!r}")
    qs = sorted(queries, key=lambda q: q.pattern_index)
    n_heldout = int(n_heldout)
    if not 1 <= n_heldout < len(qs):
        raise ParameterError(f"n_heldout must be in [1, {len(qs) - 1}] for a fact with {len(qs)} queries, "
                             f"got {n_heldout}")
    if split == "last":
        held = qs[-n_heldout:]
    else:
        rng = random.Random(f"{seed}-{qs[0].fact_id}-split")
        held = rng.sample(qs, n_heldout)
    held_idx = {q.pattern_index for q in held}
    edited = [q for q in qs if q.pattern_index not in held_idx]
    heldout = [q for q in qs if q.pattern_index in held_idx]
    return edited, heldout


# --------------------------------------------------------------------------------------- selections


def select_neurons(scores, selection: str, *, t: float = 0.2, beta1: float = 1.0, beta2: float = 1.0,
                   cas_method: str = "static", cas_threshold: float = 0.2) -> set[tuple[int, int]]:
    """Neurons chosen by ``selection`` from the edited queries' scores ``[k, L, N]`` (first row = the query
    whose KNs form N_i). See the module docstring."""
    s = torch.as_tensor(scores)
    if s.dim() != 3 or s.shape[0] < 1:
        raise ParameterError(f"scores must have shape [k, n_layers, n_neurons] with k >= 1, got {tuple(s.shape)}")
    if selection == "N_i":
        return set(knowledge_neurons(s[0], t))
    if selection == "N_g":
        out: set[tuple[int, int]] = set()
        for row in s:
            out |= set(knowledge_neurons(row, t))
        return out
    if selection == "cas":
        return cas_neurons(cas_scores(s, beta1, beta2), cas_threshold, method=cas_method)
    raise ParameterError(f"selection must be one of {SELECTIONS}, got {selection!r}")


# ------------------------------------------------------------------------------------------ the loop


def run_cas_editing(lm, dataset, *, method: str = "ig", steps: int | None = None, rule: str = "riemann",
                    site: str = "post", t: float = 0.2, tol: float | None = None,
                    selections: Sequence[str] = SELECTIONS, tasks: Sequence[str] = TASKS, beta1: float = 1.0,
                    beta2: float = 1.0, cas_method: str = "static", cas_threshold: float = 0.2,
                    n_heldout: int = 1, split: str = "random", query_filter: str = "correct", n_unrelated: int = 10,
                    lambda1: float = 1.0, lambda2: float = 8.0, seed: int = 0, n_facts: int | None = None,
                    objects: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]] | None = None,
                    ppl_texts: Sequence[str] | None = editing.DEFAULT_PPL_TEXTS, attribution_cache=None,
                    eval_cache: dict | None = None, edit_memo: dict | None = None, amig_baseline=None,
                    model_name: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Edit every usable fact of ``dataset`` with every selection and task; one row per (fact, selection, task).

    ``dataset``: a :class:`kqlib.paper.pararel.Dataset` (or any iterable of entries with ``.fact`` and ``.queries``,
    queries carrying ``target_id``/``correct``). ``query_filter="correct"`` uses only the queries the model
    answers (top-1) before editing, so that an erasure success is a real change; facts left with fewer than
    ``n_heldout + 1`` queries are skipped. ``n_facts``: a seeded sample of the usable facts (None = all).
    Scores come from :func:`kqlib.paper.localization.query_scores` (the on-disk attribution cache, shared with
    :func:`kqlib.paper.localization.localize` for the same method/steps/site). ``objects``: the candidate new
    answers per relation (default: every object of the relation in ParaRel). ``eval_cache``: a dict reused
    across calls on the same unedited model (e.g. for a β ablation), memoising unedited predictions and PPL.
    ``edit_memo``: a dict (same model, reusable across calls) memoising each edit's result by everything it
    depends on (task, neuron set, queries, o', λ, texts): selections that pick the same neurons (always the
    case with one edited query) are evaluated once. Column ``reused`` marks rows taken from the memo.
    Update rows are absent for a fact with no usable o'; a selection that selects no neuron is still
    evaluated (an empty edit; ``n_neurons = 0``). ``progress``: edits done (fact x selection x task), rate and
    ETA (:class:`kqlib.runs.progress.Progress`).
    """
    for sel in selections:
        if sel not in SELECTIONS:
            raise ParameterError(f"unknown selection {sel!r}; choose from {SELECTIONS}")
    check_edit_options(tasks, query_filter)
    name = model_name or getattr(lm, "name", "model")
    entries = sorted(dataset, key=lambda e: e.fact.fact_id)

    def usable(entry):
        qs = [q for q in entry.queries if q.target_id is not None]
        if query_filter == "correct":
            qs = [q for q in qs if q.correct]
        return qs

    chosen = [(e, usable(e)) for e in entries]
    chosen = [(e, qs) for e, qs in chosen if len(qs) >= int(n_heldout) + 1]
    if n_facts:
        chosen = sorted(random.Random(f"{seed}-cas-facts").sample(chosen, min(len(chosen), int(n_facts))),
                        key=lambda x: x[0].fact.fact_id)
    plans = []
    for entry, qs in chosen:
        fact = entry.fact
        edited_q, held_q = split_queries(qs, n_heldout, split, seed)
        kw = dict(method=method, steps=steps, rule=rule, tol=tol, site=site, cache=attribution_cache)
        if method == "amig" and amig_baseline is not None:
            kw["baseline"] = amig_baseline
        scores = query_scores(lm, edited_q, **kw)
        cas_info = dict(beta1=float(beta1), beta2=float(beta2), cas_method=cas_method,
                        cas_threshold=float(cas_threshold))
        no_cas = dict(beta1=math.nan, beta2=math.nan, cas_method=None, cas_threshold=math.nan)
        plans.append(FactEdit(
            fact, edited_q, held_q,
            {sel: select_neurons(scores, sel, t=t, beta1=beta1, beta2=beta2, cas_method=cas_method,
                                 cas_threshold=cas_threshold) for sel in selections},
            dict(model=name, fact_id=fact.fact_id, relation=fact.relation, subject=fact.subject, obj=fact.obj,
                 n_queries=len(entry.queries), n_edited_queries=len(edited_q), n_heldout_queries=len(held_q),
                 edited_patterns=[q.pattern_index for q in edited_q],
                 heldout_patterns=[q.pattern_index for q in held_q]),
            {sel: cas_info if sel == "cas" else no_cas for sel in selections}))
    rows = run_edits(lm, plans, first_queries(entries), tasks=tasks, n_unrelated=n_unrelated, lambda1=lambda1,
                     lambda2=lambda2, seed=seed, objects=objects, ppl_texts=ppl_texts, eval_cache=eval_cache,
                     edit_memo=edit_memo, model_name=name, desc=f"CAS editing {name}", progress=progress)
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


# ------------------------------------------------------------------------------------------ tables


def table3(df: pd.DataFrame, classes: Mapping[tuple[str, str], str] | None = None, metrics: Sequence[str] = METRICS,
           n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean and percentile-bootstrap CI (over facts) of each metric per (model, task, selection, group).

    ``classes``: ``{(model, fact_id): "K_C" | "K_I"}``; groups are "all" and, when given, each class. Columns:
    model, task, selection, group, facts, n_neurons (mean), and per metric ``m``, ``m_low``, ``m_high``.
    A group without facts gets NaN (and facts = 0).
    """
    rows = []
    if not len(df):
        return pd.DataFrame(columns=["model", "task", "selection", "group", "facts", "n_neurons"]
                            + [f"{m}{s}" for m in metrics for s in ("", "_low", "_high")])
    groups = ["all"] + (["K_C", "K_I"] if classes is not None else [])
    cls = None
    if classes is not None:
        cls = np.array([classes.get((m, f), None) for m, f in zip(df["model"], df["fact_id"])], dtype=object)
    for group in groups:
        part = df if group == "all" else df[cls == group]
        for (model, task, sel), g in df.groupby(["model", "task", "selection"], sort=False):
            gg = part[(part.model == model) & (part.task == task) & (part.selection == sel)]
            row = dict(model=model, task=task, selection=sel, group=group, facts=int(len(gg)),
                       n_neurons=float(gg.n_neurons.mean()) if len(gg) else math.nan)
            for m in metrics:
                vals = gg[m].to_numpy(np.float64)
                vals = vals[np.isfinite(vals)]
                row[m] = float(vals.mean()) if vals.size else math.nan
                row[f"{m}_low"], row[f"{m}_high"] = bootstrap_ci(vals, n_boot=n_boot, level=level, seed=seed)
            rows.append(row)
    return pd.DataFrame(rows)


def paired_gains(df: pd.DataFrame, metric: str = "avg", baselines: Sequence[str] = ("N_i", "N_g"),
                 classes: Mapping[tuple[str, str], str] | None = None, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> pd.DataFrame:
    """CAS − baseline on ``metric``, paired by fact: mean difference and bootstrap CI per (model, task,
    baseline, group). Only facts with both rows count. Columns: model, task, baseline, group, facts, cas,
    baseline_value, gain, gain_low, gain_high."""
    rows = []
    groups = ["all"] + (["K_C", "K_I"] if classes is not None else [])
    for (model, task), g in df.groupby(["model", "task"], sort=False):
        wide = g.pivot_table(index="fact_id", columns="selection", values=metric, aggfunc="first")
        for base in baselines:
            if "cas" not in wide or base not in wide:
                continue
            pair = wide[["cas", base]].dropna()
            for group in groups:
                if group == "all":
                    sub = pair
                else:
                    sub = pair[[classes.get((model, f)) == group for f in pair.index]]
                diff = (sub["cas"] - sub[base]).to_numpy(np.float64)
                lo, hi = bootstrap_ci(diff, n_boot=n_boot, level=level, seed=seed)
                rows.append(dict(model=model, task=task, baseline=base, group=group, facts=int(len(sub)),
                                 cas=float(sub["cas"].mean()) if len(sub) else math.nan,
                                 baseline_value=float(sub[base].mean()) if len(sub) else math.nan,
                                 gain=float(diff.mean()) if diff.size else math.nan, gain_low=lo, gain_high=hi))
    return pd.DataFrame(rows, columns=["model", "task", "baseline", "group", "facts", "cas", "baseline_value", "gain",
                                       "gain_low", "gain_high"])
