"""ParaRel facts and their paraphrased queries for decoder-only models.

Data (patterns + T-REx tuples, Elazar et al. 2021) come from a directory laid out as::

    <root>/patterns/Pxxx.jsonl   {"pattern": "The native language of [X] is [Y].", ...}
    <root>/tuples/Pxxx.jsonl     {"sub_label": ..., "obj_label": ..., "uuid": ...}

found by :func:`pararel_root` (argument, ``$KQLIB_PARAREL``, a ``shared/data/pararel`` checkout beside the
repository, the user cache, else a download of upstream commit :data:`PARAREL_COMMIT`).

A fact's queries are its relation's patterns whose ``[Y]`` ends the sentence, filled with the subject and cut
right before the object, so the model's next token is the answer (spec §8). :func:`build_dataset` walks a
seeded shuffle of each relation's facts and keeps the first ``n_per_relation`` the model answers. The files,
records and their reading live in :mod:`kqlib.paper.pararel_files` (re-exported here).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from kqlib.errors import DataError, ParameterError
from kqlib.runs.progress import Progress
from kqlib.paper.pararel_files import (  # noqa: F401 (re-exported: the ParaRel API in one place)
    Pattern, Fact, Query, _shared_candidates, _looks_complete, cache_dir, pararel_root, _layout_hint, upstream_files, download_pararel, _repair_advice, _read_jsonl, available_relations, _require_relations, _check_relation, load_patterns, load_facts, usable_patterns, relations, fact_queries, shuffled_facts, sample_facts, RELATIONS, RELATIONS_WITHOUT_PATTERNS, MULTI_TOKEN_POLICIES, _TRAILING,
    PARAREL_REPO, PARAREL_COMMIT, PARAREL_BASE_URL, UPSTREAM_PATTERNS, UPSTREAM_TUPLES, ENV_VAR, COMPLETE_MARKER)


# ------------------------------------------------------------------------------------------ model scoring


def _score(query: Query, prob: float, rank: int, top1: int, top_k: int) -> Query:
    return replace(query, rank=int(rank), prob=float(prob), correct=int(rank) <= top_k, top_id=int(top1))


def attach_answers(lm, queries: Sequence[Query]) -> list[Query]:
    """Queries with ``answer_ids`` (``lm.answer_token_ids(prompt, obj)``) and ``target_id`` (the first) set."""
    out = []
    for q in queries:
        ids = tuple(int(i) for i in lm.answer_token_ids(q.prompt, q.obj))
        if not ids:
            raise DataError(f"object {q.obj!r} encodes to zero tokens after {q.prompt!r}")
        out.append(replace(q, answer_ids=ids, target_id=ids[0]))
    return out


def score_queries(lm, queries: Sequence[Query], top_k: int = 1, batch_size: int = 32) -> list[Query]:
    """Evaluate queries (answers attached if missing): fill rank, prob, correct and top_id."""
    queries = [q if q.target_id is not None else attach_answers(lm, [q])[0] for q in queries]
    if not queries:
        return []
    a = lm.answer_probabilities([q.prompt for q in queries], [q.target_id for q in queries], batch_size=batch_size)
    return [_score(q, p, r, t, top_k) for q, p, r, t in zip(queries, a["p"].tolist(), a["rank"].tolist(),
                                                         a["top1"].tolist())]


# ------------------------------------------------------------------------------------------ dataset


QUERY_FILTERS = ("correct", "all")  # which queries of a kept fact enter an analysis (Dataset.with_queries)


def check_query_filter(query_filter: str) -> None:
    """Refuse a query filter that is not one of :data:`QUERY_FILTERS` (the one check, used by every caller)."""
    if query_filter not in QUERY_FILTERS:
        raise ParameterError(f"query_filter must be one of {QUERY_FILTERS}, got {query_filter!r}")


@dataclass
class FactEntry:
    """A kept fact with its scored queries."""

    fact: Fact
    queries: list[Query]

    @property
    def n_correct(self) -> int:
        return sum(bool(q.correct) for q in self.queries)

    @property
    def n_answer_tokens(self) -> int:
        return max(q.n_answer_tokens or 0 for q in self.queries)


@dataclass
class Dataset:
    """Facts kept by :func:`build_dataset`, their queries, the parameters used and per-relation scan counts."""

    facts: list[FactEntry]
    params: dict
    scan: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self):
        return iter(self.facts)

    @property
    def queries(self) -> list[Query]:
        return [q for entry in self.facts for q in entry.queries]

    def relations(self) -> list[str]:
        return list(dict.fromkeys(e.fact.relation for e in self.facts))

    def with_queries(self, query_filter: str) -> "Dataset":
        """The same facts with the queries ``query_filter`` keeps: ``"correct"`` only the queries the model
        answers (rank <= top_k), ``"all"`` every query. The book applies one filter to every chapter
        (:data:`QUERY_FILTERS`); facts left with no query are dropped (counted in ``params``)."""
        check_query_filter(query_filter)
        if query_filter == "all":
            return replace(self, params={**self.params, "query_filter": "all"})
        facts = [FactEntry(e.fact, [q for q in e.queries if q.correct]) for e in self.facts]
        kept = [e for e in facts if e.queries]
        params = {**self.params, "query_filter": "correct", "dropped_no_correct_query": len(facts) - len(kept)}
        return replace(self, facts=kept, params=params)

    def to_frame(self):
        """Tidy DataFrame: one row per query (fact columns repeated)."""
        rows = []
        for entry in self.facts:
            for q in entry.queries:
                row = asdict(q)
                row["answer_ids"] = list(q.answer_ids or ())
                row["n_answer_tokens"] = q.n_answer_tokens
                row["fact_n_correct"] = entry.n_correct
                row["fact_n_queries"] = len(entry.queries)
                rows.append(row)
        cols = ["relation", "fact_id", "subject", "obj", "pattern_index", "prompt", "target_id", "answer_ids",
                "n_answer_tokens", "rank", "prob", "correct", "top_id", "fact_n_correct", "fact_n_queries"]
        return pd.DataFrame(rows, columns=cols)

    def scan_frame(self):
        """Per relation: facts available, scanned, evaluated by the model, kept, and why others were dropped."""
        return pd.DataFrame([{"relation": r, **s} for r, s in self.scan.items()])

    def __repr__(self) -> str:
        return (f"Dataset({len(self.facts)} facts, {len(self.queries)} queries, {len(self.scan)} relations, "
                f"model={self.params.get('model')!r}, multi_token={self.params.get('multi_token')!r})")


def _passes(entry_queries: Sequence[Query], min_correct: int | str) -> bool:
    need = len(entry_queries) if min_correct == "all" else int(min_correct)
    return sum(bool(q.correct) for q in entry_queries) >= need


def _check_params(top_k, min_correct, min_queries, multi_token, n_per_relation) -> None:
    if multi_token not in MULTI_TOKEN_POLICIES:
        raise ParameterError(f"multi_token must be one of {MULTI_TOKEN_POLICIES}, got {multi_token!r}")
    if int(top_k) < 1:
        raise ParameterError(f"top_k must be >= 1, got {top_k}")
    if min_correct != "all" and int(min_correct) < 0:
        raise ParameterError(f"min_correct must be >= 0 or 'all', got {min_correct!r}")
    if int(min_queries) < 1:
        raise ParameterError(f"min_queries must be >= 1, got {min_queries}")
    if n_per_relation is not None and int(n_per_relation) < 1:
        raise ParameterError(f"n_per_relation must be >= 1 or None, got {n_per_relation}")


def _resolve_relations(requested, base: Path, min_patterns: int) -> list[str]:
    if requested is None:
        _require_relations(available_relations(base), base)
        return relations(base, min_patterns)
    if isinstance(requested, str):
        requested = [requested]
    out = []
    for rel in requested:
        n = len(usable_patterns(load_patterns(rel, base)))  # raises DataError for unknown ids
        if n < min_patterns:
            raise DataError(f"Relation {rel} has {n} pattern(s) ending in [Y], fewer than min_patterns="
                            f"{min_patterns}; pick another relation or lower min_patterns. Relations that qualify: "
                            f"{', '.join(relations(base, min_patterns))}")
        out.append(rel)
    return out


def build_dataset(lm, relations: Sequence[str] | str | None = None, n_per_relation: int | None = 10, seed: int = 0,
                  top_k: int = 1, min_correct: int | str = 1, min_queries: int = 2, multi_token: str = "first",
                  root: str | os.PathLike | None = None, max_scan: int | None = None, min_patterns: int = 2,
                  batch_size: int = 32, progress: bool = True) -> Dataset:
    """Facts the model knows, with their queries, ``n_per_relation`` per relation.

    Per relation: the facts in a seeded shuffle (:func:`shuffled_facts`) are walked in order and kept when they
    have >= ``min_queries`` queries and the model ranks the answer's first token within ``top_k`` on
    >= ``min_correct`` of them (an int or ``"all"``); the walk stops at ``n_per_relation`` kept facts
    (``None``: all) or after ``max_scan`` facts. ``multi_token``: ``"first"`` scores the object's first token
    (``n_answer_tokens`` is recorded), ``"skip"`` drops facts whose object is more than one token.
    ``batch_size`` prompts go through the model per forward pass (1: ``lm.next_token_logits`` one at a time).
    """
    _check_params(top_k, min_correct, min_queries, multi_token, n_per_relation)
    base = pararel_root(root)
    rels = _resolve_relations(relations, base, min_patterns)
    t0 = time.time()
    kept: list[FactEntry] = []
    scan: dict[str, dict] = {}
    plan = []
    for rel in rels:
        order = shuffled_facts(load_facts(rel, base), seed)
        if max_scan is not None:
            order = order[: int(max_scan)]
        plan.append((rel, order, len(order) if n_per_relation is None else min(int(n_per_relation), len(order))))
    # one bar for the whole scan: kept facts of the wanted total (a relation that runs out counts as done)
    bar = Progress(sum(w for _, _, w in plan), f"ParaRel scan ({getattr(lm, 'name', 'model')}, "
                   f"{len(rels)} relation{'s' if len(rels) != 1 else ''})", "fact", enabled=progress)
    for rel, order, bar_want in plan:
        patterns = usable_patterns(load_patterns(rel, base))
        want = len(order) if n_per_relation is None else int(n_per_relation)
        stats = dict(facts=len(order), patterns=len(patterns), scanned=0, evaluated=0, kept=0,
                     dropped_multi_token=0, dropped_few_queries=0, dropped_not_answered=0, seconds=0.0)
        t_rel = time.time()
        pos = 0
        while pos < len(order) and stats["kept"] < want:
            # gather a chunk of candidate facts worth about one batch of prompts, then score them together
            chunk, n_prompts = [], 0
            while pos < len(order) and (not chunk or n_prompts + len(patterns) <= max(batch_size, 1)) \
                    and len(chunk) < want - stats["kept"] + 4:
                fact = order[pos]
                pos += 1
                queries = attach_answers(lm, fact_queries(fact, patterns))
                if multi_token == "skip" and any(q.n_answer_tokens > 1 for q in queries):
                    chunk.append((fact, None, "dropped_multi_token"))
                    continue
                if len(queries) < min_queries:
                    chunk.append((fact, None, "dropped_few_queries"))
                    continue
                chunk.append((fact, queries, None))
                n_prompts += len(queries)
            to_score = [q for _, qs, _ in chunk if qs for q in qs]
            scored = iter(score_queries(lm, to_score, top_k=top_k, batch_size=batch_size))
            for fact, queries, reason in chunk:  # walk in order, so batching never changes which facts are kept
                if stats["kept"] >= want:
                    break
                stats["scanned"] += 1
                if reason:
                    stats[reason] += 1
                    continue
                done = [next(scored) for _ in queries]
                stats["evaluated"] += 1
                if _passes(done, min_correct):
                    kept.append(FactEntry(fact, done))
                    stats["kept"] += 1
                    bar.step(note=f"({rel}: {stats['scanned']} scanned)")
                else:
                    stats["dropped_not_answered"] += 1
        if stats["kept"] < bar_want:  # the relation ran out of facts: its share of the bar is done
            bar.step(bar_want - stats["kept"], note=f"({rel}: {stats['scanned']} scanned)")
        stats["seconds"] = round(time.time() - t_rel, 3)
        scan[rel] = stats
        if stats["kept"] < want and n_per_relation is not None:
            warnings.warn(f"ParaRel {rel}: only {stats['kept']} of {want} requested facts passed after scanning "
                          f"{stats['scanned']} (max_scan={max_scan}); relax top_k/min_correct or raise max_scan.",
                          stacklevel=2)
    bar.close()
    params = dict(model=getattr(lm, "name", None), fingerprint=getattr(lm, "fingerprint", None),
                  relations=list(rels), n_per_relation=n_per_relation, seed=seed, top_k=top_k,
                  min_correct=min_correct, min_queries=min_queries, multi_token=multi_token, max_scan=max_scan,
                  min_patterns=min_patterns, root=str(base), commit=PARAREL_COMMIT,
                  seconds=round(time.time() - t0, 3))
    return Dataset(kept, params, scan)


def relation_stats(lm=None, root: str | os.PathLike | None = None, relations: Sequence[str] | None = None,
                   sample: int = 20, seed: int = 0, top_k: int = 1, min_correct: int | str = 1,
                   min_patterns: int = 2, batch_size: int = 32, progress: bool = True):
    """Per relation DataFrame: patterns, usable patterns, facts; with ``lm`` also single-token objects and answers.

    ``single_token_facts``: facts whose object is one token after the first usable prompt, for this tokenizer.
    ``answered``: of ``sample`` seeded facts (column ``sample``: how many were drawn), those the model answers
    (first token within ``top_k`` on >= ``min_correct`` queries). Relations below ``min_patterns`` usable
    patterns are listed with ``kept=False`` and no model columns.
    """
    base = pararel_root(root)
    rels = available_relations(base) if relations is None else list(relations)
    _require_relations(rels, base)
    rows = []
    bar = Progress(len(rels), "ParaRel relations", "relation", enabled=progress and lm is not None,
                   channel=None if lm is not None else False)
    for rel in rels:
        pats = load_patterns(rel, base)
        usable = usable_patterns(pats)
        facts = load_facts(rel, base)
        row = dict(relation=rel, patterns=len(pats), usable_patterns=len(usable),
                   kept=len(usable) >= min_patterns, facts=len(facts),
                   distinct_objects=len({f.obj for f in facts}))
        if lm is not None and usable:
            row["single_token_facts"] = sum(len(lm.answer_token_ids(usable[0].fill(f.subject), f.obj)) == 1
                                            for f in facts)
            if sample and row["kept"]:
                drawn = sample_facts(facts, sample, seed)
                queries = [q for f in drawn for q in fact_queries(f, usable)]
                scored = score_queries(lm, queries, top_k=top_k, batch_size=batch_size)
                per_fact = [scored[i:i + len(usable)] for i in range(0, len(scored), len(usable))]
                row["sample"] = len(drawn)
                row["answered"] = sum(_passes(qs, min_correct) for qs in per_fact)
                row["answered_frac"] = row["answered"] / max(len(drawn), 1)
                row["query_accuracy"] = sum(bool(q.correct) for q in scored) / max(len(scored), 1)
        rows.append(row)
        bar.step(note=f"({rel})")
    bar.close()
    frame = pd.DataFrame(rows)
    for col in ("single_token_facts", "sample", "answered"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    frame.attrs.update(root=str(base), sample=sample, seed=seed, top_k=top_k, min_correct=min_correct,
                       model=getattr(lm, "name", None))
    return frame
