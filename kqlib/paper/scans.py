"""The ParaRel scan of a model, done once: cached by content, reused by every chapter and ``kq data``.

:func:`scan` is :func:`kqlib.paper.pararel.build_dataset` behind a cache. Its key is the sha256 of the model's
fingerprint, the digest of the ParaRel files it reads (the relations' pattern and fact files) and the scan's
parameters (relations, facts per relation, seed, the answer filter ``top_k`` / ``min_correct`` /
``min_queries``, ``multi_token``, ``max_scan``, ``min_patterns``). The scan is stored as a record of the one
on-disk cache (:meth:`kqlib.runs.cache.AttributionCache.put_record`: atomic write, key and digest checked on
read, a damaged record is recomputed) under ``<kqlib cache>/scans``.

When a model keeps too few facts, :func:`require_facts` stops the run with :class:`~kqlib.errors.TooFewFacts`:
per relation the facts scanned and kept and why the others were dropped, and what to run instead
(:func:`what_it_knows` is the table of ``kq data --model``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from kqlib.core.models import cache_root
from kqlib.errors import TooFewFacts
from kqlib.paper import pararel
from kqlib.paper.pararel import Dataset, Fact, FactEntry, Query
from kqlib.runs.cache import AttributionCache

SCAN_VERSION = 1  # bump when build_dataset's output changes for the same inputs
_PARAMS = ("relations", "n_per_relation", "seed", "top_k", "min_correct", "min_queries", "multi_token", "max_scan",
           "min_patterns")


def data_digest(base: Path, relations: Sequence[str]) -> str:
    """sha256 over the pattern and fact files of ``relations`` under the ParaRel folder ``base``."""
    h = hashlib.sha256()
    for rel in relations:
        for sub in ("patterns", "tuples"):
            path = Path(base) / sub / f"{rel}.jsonl"
            h.update(f"{sub}/{rel}:".encode())
            h.update(path.read_bytes() if path.exists() else b"<absent>")
    return h.hexdigest()


def scan_key(fingerprint: str, digest: str, params: Mapping) -> str:
    """The content key of a scan: sha256 of (version, model fingerprint, data digest, scan parameters)."""
    body = json.dumps({"v": SCAN_VERSION, "model": fingerprint, "data": digest,
                       **{k: params.get(k) for k in _PARAMS}}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def to_record(ds: Dataset) -> dict:
    return {"params": ds.params, "scan": list(ds.scan.items()),  # pairs: the relations' order survives sort_keys
            "facts": [{"fact": asdict(e.fact), "queries": [asdict(q) for q in e.queries]} for e in ds.facts]}


def from_record(rec: Mapping) -> Dataset:
    def query(d):
        return Query(**{**d, "answer_ids": tuple(d["answer_ids"]) if d.get("answer_ids") is not None else None})

    facts = [FactEntry(Fact(**e["fact"]), [query(q) for q in e["queries"]]) for e in rec["facts"]]
    return Dataset(facts, dict(rec["params"]), dict(rec["scan"]))


def _store():

    return AttributionCache(cache_root() / "scans")


def scan(lm, relations: Sequence[str] | str | None = None, n_per_relation: int | None = 10, seed: int = 0, *,
         min_correct: int | str = 2, root=None, cache: bool = True, progress: bool = True, **kw) -> Dataset:
    """:func:`~kqlib.paper.pararel.build_dataset` of ``lm``, read from the scan cache when the same model, data
    and parameters were scanned before (``ds.params["cached"]`` says which). ``cache=False``: always scan."""
    fingerprint = getattr(lm, "fingerprint", None) if cache else None
    key = store = None
    if fingerprint:
        base = pararel.pararel_root(root)
        rels = pararel._resolve_relations(relations, base, kw.get("min_patterns", 2))
        defaults = dict(top_k=1, min_queries=2, multi_token="first", max_scan=None, min_patterns=2)
        params = {**defaults, **kw, "relations": rels, "n_per_relation": n_per_relation, "seed": seed,
                  "min_correct": min_correct}
        digest = data_digest(base, rels)
        key = scan_key(fingerprint, digest, params)
        whole = scan_key(fingerprint, digest, {**params, "n_per_relation": "every relation walked to its end"})
        store = _store()
        rec = store.get_record(key)
        if rec is None:  # a walk that reached every relation's end is the same walk for any n above what it kept
            rec = store.get_record(whole)
            rec = rec if rec is not None and _walked_to_end(dict(rec["scan"]), n_per_relation) else None
        if rec is not None:
            ds = from_record(rec)
            ds.params.update(model=getattr(lm, "name", None), n_per_relation=n_per_relation, cached=True)
            return ds
    extra = {"root": root} if root is not None else {}
    ds = pararel.build_dataset(lm, relations, n_per_relation, seed=seed, min_correct=min_correct,
                               progress=progress, **extra, **kw)
    ds.params["cached"] = False
    if key is not None:
        store.put_record(key, to_record(ds))
        if _walked_to_end(ds.scan, n_per_relation):
            store.put_record(whole, to_record(ds))
    return ds


def _walked_to_end(scan_stats: Mapping[str, Mapping], n_per_relation: int | None) -> bool:
    """Every relation's walk covered all its facts and kept fewer than ``n_per_relation`` (a walk asking for any
    number above what it kept is the same walk: a model that knows little is scanned once for every chapter)."""
    return all(s.get("scanned") == s.get("facts") and (n_per_relation is None or s.get("kept", 0) < n_per_relation)
               for s in scan_stats.values())


# ------------------------------------------------------------------------------------- too few facts


def relations_option(names: Sequence[str]) -> str:
    """The ``-p`` option that selects ``names``, quoted for a shell: ``-p 'relations=["P36","P103"]'``."""
    return "-p 'relations=[" + ",".join(f'"{n}"' for n in names) + "]'"


def scan_lines(ds: Dataset) -> list[str]:
    """One line per scanned relation: facts scanned, kept, and why the others were dropped."""
    need, top = ds.params.get("min_correct", 2), ds.params.get("top_k", 1)
    out = []
    for rel, s in ds.scan.items():
        why = [f"{s.get('dropped_not_answered', 0)} answered on fewer than {need} phrasing(s) top-{top}"]
        if s.get("dropped_few_queries"):
            why.append(f"{s['dropped_few_queries']} with too few phrasings")
        if s.get("dropped_multi_token"):
            why.append(f"{s['dropped_multi_token']} with a multi-token object")
        out.append(f"  {rel}: {s.get('scanned', 0)} of {s.get('facts', 0)} facts scanned, {s.get('kept', 0)} kept "
                   f"({', '.join(why)})")
    return out


def next_step(ds: Dataset, model: str) -> str:
    """What to run instead: the scanned relations where the model keeps facts, else ``kq data --model``."""
    good = sorted((r for r, s in ds.scan.items() if s.get("kept")), key=lambda r: -ds.scan[r]["kept"])
    look = f"kq data --model {model}"
    if good:
        counts = ", ".join(f"{r}: {ds.scan[r]['kept']}" for r in good)
        return (f"It answers facts of {counts}. Rerun with those: {relations_option(good)} (and "
                f"-p n_facts_per_relation=0 to keep every fact it answers), or list what it knows in every "
                f"relation: {look}")
    return f"None of the scanned relations works for it. List what it knows in every relation: {look}"


def too_few_message(ds: Dataset, model: str, need: int, where: str) -> str:
    kept = len(ds)
    need_q, top = ds.params.get("min_correct", 2), ds.params.get("top_k", 1)
    return "\n".join([
        f"Model {model!r} keeps {kept} ParaRel fact(s); {where} needs at least {need}.",
        f"A fact is kept when the model answers at least {need_q} of its phrasings top-{top} (the answer's first "
        f"token is {'its top-1 next token' if top == 1 else f'among its top-{top} next tokens'}). The scan:", *scan_lines(ds), "What to do: " + next_step(ds, model)])


def require_facts(datasets: Mapping[str, Dataset], need: int, where: str, stacklevel: int = 2) -> dict[str, Dataset]:
    """The models (name -> scan) that keep at least ``need`` facts. A model below is left out with a warning
    naming it and saying why; when none is left, :class:`~kqlib.errors.TooFewFacts` says what each scan found and
    what to run instead. ``stacklevel``: of the warning (the caller's caller: the notebook cell in a chapter)."""
    ok = {m: d for m, d in datasets.items() if len(d) >= need}
    if not ok:
        raise TooFewFacts("\n\n".join(too_few_message(d, m, need, where) for m, d in datasets.items()))
    for m, d in datasets.items():
        if m not in ok:
            warnings.warn(f"{where}: left out model {m!r}: " + too_few_message(d, m, need, where), stacklevel=stacklevel)
    return ok


def scan_models(lms, relations=None, n_per_relation: int | None = 10, seed: int = 0, *, need: int = 1,
                where: str = "this run", **kw) -> dict[str, Dataset]:
    """:func:`scan` of every model, then :func:`require_facts`: name -> scan of the models that keep ``need``
    facts (the others left out with a warning; none left: :class:`~kqlib.errors.TooFewFacts`)."""
    found = {lm.name: scan(lm, relations, n_per_relation, seed, **kw) for lm in lms}
    return require_facts(found, need, where, stacklevel=3)


# ---------------------------------------------------------------------------------------- kq data


def what_it_knows(ds: Dataset, totals: Mapping[str, int] | None = None):
    """Per relation of a scan (``n_per_relation=None``, ``min_correct=1``): its facts (``totals``, else those in the
    scan's order), phrasings, facts scanned and those answered on >= 1, >= 2 and >= 4 phrasings top-1, sorted by
    >= 4 then >= 2 (best first)."""
    rows = []
    for rel, s in ds.scan.items():
        counts = [e.n_correct for e in ds.facts if e.fact.relation == rel]
        rows.append(dict(relation=rel, facts=(totals or {}).get(rel, s.get("facts", 0)), patterns=s.get("patterns", 0),
                         scanned=s.get("scanned", 0), answered_1=sum(c >= 1 for c in counts),
                         answered_2=sum(c >= 2 for c in counts), answered_4=sum(c >= 4 for c in counts)))
    cols = ["relation", "facts", "patterns", "scanned", "answered_1", "answered_2", "answered_4"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.sort_values(["answered_4", "answered_2", "relation"], ascending=[False, False, True],
                             ignore_index=True)


def suggest_relations(table, min_facts: int = 1, top: int = 8) -> list[str]:
    """The best relations of :func:`what_it_knows`: at most ``top`` with >= ``min_facts`` facts on >= 2 phrasings."""
    return [r for r, n in zip(table.relation, table.answered_2) if n >= min_facts][:top]
