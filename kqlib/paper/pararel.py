"""ParaRel facts and their paraphrased queries for decoder-only models.

Data (patterns + T-REx tuples, Elazar et al. 2021) come from a directory laid out as::

    <root>/patterns/Pxxx.jsonl   {"pattern": "The native language of [X] is [Y].", ...}
    <root>/tuples/Pxxx.jsonl     {"sub_label": ..., "obj_label": ..., "uuid": ...}

found by :func:`pararel_root` (argument, ``$KQLIB_PARAREL``, a ``shared/data/pararel`` checkout beside the
repository, the user cache, else a download of upstream commit :data:`PARAREL_COMMIT`).

A fact's queries are its relation's patterns whose ``[Y]`` ends the sentence, filled with the subject and cut
right before the object, so the model's next token is the answer (spec §8). :func:`build_dataset` walks a
seeded shuffle of each relation's facts and keeps the first ``n_per_relation`` the model answers.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import torch

from kqlib.errors import DataError, OfflineError, ParameterError
from kqlib.runs.progress import Progress

PARAREL_REPO = "yanaiela/pararel"
PARAREL_COMMIT = "cb5554678457beb5ac163d888f1ce8cf174b3f0b"
#: Raw-file server; the URL of a file is ``{PARAREL_BASE_URL}/{commit}/{upstream path}``.
PARAREL_BASE_URL = "https://raw.githubusercontent.com/yanaiela/pararel"
UPSTREAM_PATTERNS = "data/pattern_data/graphs_json/{relation}.jsonl"
UPSTREAM_TUPLES = "data/trex_lms_vocab/{relation}.jsonl"
ENV_VAR = "KQLIB_PARAREL"
COMPLETE_MARKER = "kqlib-complete"

#: The 39 relations with both a pattern file and a tuple file (P31 and P527 have tuples only).
RELATIONS: tuple[str, ...] = (
    "P17", "P19", "P20", "P27", "P30", "P36", "P37", "P39", "P47", "P101", "P103", "P106", "P108",
    "P127", "P131", "P136", "P138", "P140", "P159", "P176", "P178", "P190", "P264", "P276", "P279",
    "P361", "P364", "P407", "P413", "P449", "P463", "P495", "P530", "P740", "P937", "P1001", "P1303",
    "P1376", "P1412",
)
RELATIONS_WITHOUT_PATTERNS = ("P31", "P527")

MULTI_TOKEN_POLICIES = ("first", "skip")
_TRAILING = re.compile(r"[\s.,]+$")


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Pattern:
    """A ParaRel template of one relation, e.g. ``"[X] holds the position of [Y]."``."""

    relation: str
    template: str

    @property
    def stem(self) -> str | None:
        """The template cut right before ``[Y]`` when ``[Y]`` ends it (bar trailing ``.``/``,``/spaces), else None."""
        core = _TRAILING.sub("", self.template)
        if not core.endswith("[Y]") or core.count("[Y]") != 1 or self.template.count("[X]") != 1:
            return None
        return core[: -len("[Y]")].rstrip()

    @property
    def usable(self) -> bool:
        """True when a decoder-only model can answer it by predicting the next token."""
        return bool(self.stem) and self.stem.strip() != "[X]"

    def fill(self, subject: str) -> str:
        """The prompt for ``subject``: the stem with ``[X]`` replaced; ends right before the object."""
        if not self.usable:
            raise DataError(f"pattern {self.template!r} ({self.relation}) has [Y] mid-sentence; it cannot be a prompt")
        return self.stem.replace("[X]", subject.strip())


@dataclass(frozen=True)
class Fact:
    """A T-REx triple (subject, relation, object); ``uuid`` is its id in ParaRel/LAMA."""

    relation: str
    subject: str
    obj: str
    uuid: str

    @property
    def fact_id(self) -> str:
        return self.uuid


@dataclass(frozen=True)
class Query:
    """One phrasing of a fact: ``prompt`` ends right before the object.

    ``pattern_index`` indexes the relation's usable patterns (:func:`usable_patterns`), so the same index means
    the same phrasing across facts. The scoring fields are None until the query is evaluated by a model:
    ``answer_ids`` (the object's tokens after the prompt), ``target_id`` (the token scored: the first),
    ``rank`` (1 = top-1), ``prob`` (softmax probability of ``target_id``), ``correct`` (rank <= top_k) and
    ``top_id`` (the model's top-1 token).
    """

    fact_id: str
    relation: str
    subject: str
    obj: str
    prompt: str
    pattern_index: int
    answer_ids: tuple[int, ...] | None = None
    target_id: int | None = None
    rank: int | None = None
    prob: float | None = None
    correct: bool | None = None
    top_id: int | None = None

    @property
    def n_answer_tokens(self) -> int | None:
        return None if self.answer_ids is None else len(self.answer_ids)


# ------------------------------------------------------------------------------------------ locate / download


def _shared_candidates() -> list[Path]:
    """``shared/data/pararel`` beside the working directory (or its parents) and beside the repository."""
    import kqlib

    cwd = Path.cwd().resolve()
    bases = [cwd, *list(cwd.parents)[:3], Path(kqlib.__file__).resolve().parents[1].parent]
    seen, out = set(), []
    for base in bases:
        cand = base / "shared" / "data" / "pararel"
        if cand not in seen:
            seen.add(cand)
            out.append(cand)
    return out


def _looks_complete(root: Path) -> bool:
    return (root / "patterns").is_dir() and (root / "tuples").is_dir()


def cache_dir(commit: str = PARAREL_COMMIT) -> Path:
    """Where downloads of ``commit`` go: ``kqlib.core.models.cache_root() / "pararel" / commit``."""
    from kqlib.core.models import cache_root

    return cache_root() / "pararel" / commit


def pararel_root(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The ParaRel data directory.

    Order: ``root``; ``$KQLIB_PARAREL``; ``shared/data/pararel`` beside the working directory or the repository;
    a completed download in the user cache; else download (when ``download``) with :func:`download_pararel`.
    """
    for given, origin in ((root, "the root argument"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if given is None:
            continue
        path = Path(given).expanduser()
        if not path.is_dir():
            raise DataError(f"ParaRel directory {path} (from {origin}) does not exist. {_layout_hint()}")
        if not _looks_complete(path):
            missing = [d for d in ("patterns", "tuples") if not (path / d).is_dir()]
            raise DataError(f"ParaRel directory {path} (from {origin}) lacks {' and '.join(m + '/' for m in missing)}. "
                            f"{_layout_hint()}")
        return path
    for cand in _shared_candidates():
        if _looks_complete(cand):
            return cand
    cached = cache_dir()
    if (cached / COMPLETE_MARKER).exists():
        # a file deleted from the download (e.g. a truncated one, as the read error advises) is fetched again
        if download and any(not (cached / local).exists() for _, local in upstream_files()):
            return download_pararel(cached)
        return cached
    if not download:
        raise DataError(f"No ParaRel data found and download=False. {_layout_hint()}")
    return download_pararel(cached)


def _layout_hint() -> str:
    return (f"Expected patterns/Pxxx.jsonl and tuples/Pxxx.jsonl (as in github.com/{PARAREL_REPO}); "
            f"set {ENV_VAR}=/path/to/pararel or pass root=..., or leave both unset to download it.")


def upstream_files(relations: Iterable[str] = RELATIONS) -> list[tuple[str, str]]:
    """``(upstream path, local path)`` pairs for the given relations, plus the LICENSE."""
    pairs = [("LICENSE", "LICENSE")]
    for rel in relations:
        pairs.append((UPSTREAM_PATTERNS.format(relation=rel), f"patterns/{rel}.jsonl"))
        pairs.append((UPSTREAM_TUPLES.format(relation=rel), f"tuples/{rel}.jsonl"))
    return pairs


def download_pararel(dest: str | os.PathLike | None = None, base_url: str | None = None,
                     commit: str = PARAREL_COMMIT, relations: Sequence[str] = RELATIONS,
                     timeout: float = 30.0, progress: bool = True) -> Path:
    """Download the ParaRel patterns and tuples of ``relations`` into ``dest`` (default :func:`cache_dir`).

    Each file is written atomically; files already present are kept (an interrupted download resumes).
    ``dest/kqlib-complete`` marks completion. Raises :class:`OfflineError` when the server is unreachable.
    """
    dest = Path(dest) if dest is not None else cache_dir(commit)
    base_url = (base_url or PARAREL_BASE_URL).rstrip("/")
    files = upstream_files(relations)
    dest.mkdir(parents=True, exist_ok=True)
    todo = [(remote, local) for remote, local in files if not (dest / local).exists()]
    bar = Progress(len(todo), "downloading ParaRel", "file", enabled=progress,
                   start_note=f"{len(files) - len(todo)} already here" if len(todo) < len(files) else None)
    for remote, local in todo:
        target = dest / local
        url = f"{base_url}/{commit}/{remote}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise DataError(f"Downloading ParaRel failed: {url} answered HTTP {exc.code}. Check the base URL "
                            f"and commit, or set {ENV_VAR}=/path/to/pararel.") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OfflineError(f"Could not download ParaRel from {base_url} ({reason}). The data is needed once; "
                               f"set {ENV_VAR}=/path/to/pararel (a copy of the data directory) or connect to "
                               f"the internet and retry.") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, target)
        bar.step(note=f"({remote.rsplit('/', 1)[-1]})")
    bar.close()
    if progress:
        print(f"[kqlib] ParaRel ({len(files)} files) ready in {dest}", file=sys.stderr, flush=True)
    marker = dest / COMPLETE_MARKER
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(f"repo={PARAREL_REPO}\ncommit={commit}\nrelations={','.join(relations)}\n")
    os.replace(tmp, marker)
    return dest


# ------------------------------------------------------------------------------------------ parsing


def _repair_advice(path: Path) -> str:
    """What to do about a damaged data file: a downloaded one is fetched again once deleted; any other
    copy (``$KQLIB_PARAREL``, ``--pararel``, a shared checkout) must be restored by whoever made it."""
    try:
        downloaded = Path(path).resolve().is_relative_to(cache_dir().resolve())
    except OSError:
        downloaded = False
    if downloaded:
        return f"delete {path} and rerun: kqlib downloads the missing file again."
    return (f"restore it from a good copy of ParaRel (github.com/{PARAREL_REPO} at commit {PARAREL_COMMIT[:10]}: "
            f"{UPSTREAM_PATTERNS.split('/')[1]}/... and {UPSTREAM_TUPLES.split('/')[1]}/...), or point "
            f"{ENV_VAR} / --pararel at another copy, or unset them to use kqlib's own download.")


def _read_jsonl(path: Path, fields: tuple[str, ...] = ()) -> list[dict]:
    """The JSON objects of a .jsonl file; each must be an object whose ``fields`` are strings."""
    rows = []
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a text (UTF-8) JSON-lines file (byte {exc.start} is invalid): it is "
                        f"damaged or not ParaRel data; {_repair_advice(path)}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno} is not valid JSON ({exc.msg}); the file may be truncated: "
                            f"{_repair_advice(path)}") from None
        bad = (not isinstance(row, dict) and "is not a JSON object") or next(
            (f"lacks the {k!r} field" if k not in row else f"has a non-text {k!r} ({row[k]!r})"
             for k in fields if not isinstance(row.get(k), str)), None)
        if bad:
            raise DataError(f"{path}:{lineno} {bad}; expected one object per line with the text fields "
                            f"{', '.join(fields)}: {line.strip()[:120]}. The file is not ParaRel data or is "
                            f"damaged; {_repair_advice(path)}")
        rows.append(row)
    return rows


def available_relations(root: str | os.PathLike | None = None) -> list[str]:
    """Relations with both a pattern file and a tuple file under the data root, in numeric order."""
    base = pararel_root(root)
    pats = {p.stem for p in (base / "patterns").glob("P*.jsonl")}
    tups = {p.stem for p in (base / "tuples").glob("P*.jsonl")}
    return sorted(pats & tups, key=lambda r: int(r[1:]) if r[1:].isdigit() else 10**9)


def _require_relations(rels: Sequence[str], base: Path) -> None:
    if not rels:
        raise DataError(f"The ParaRel directory {base} holds no relation (no Pxxx.jsonl present in both "
                        f"patterns/ and tuples/). {_layout_hint()}")


def _check_relation(relation: str, base: Path) -> None:
    if (base / "patterns" / f"{relation}.jsonl").exists() and (base / "tuples" / f"{relation}.jsonl").exists():
        return
    valid = available_relations(base)
    why = (" It has facts but no patterns upstream (an N-M relation ParaRel leaves out)."
           if relation in RELATIONS_WITHOUT_PATTERNS else "")
    what = "is not usable" if why else "is unknown"
    raise DataError(f"ParaRel relation {relation!r} {what} in {base}.{why} Valid relations ({len(valid)}): "
                    f"{', '.join(valid)}")


def load_patterns(relation: str, root: str | os.PathLike | None = None) -> list[Pattern]:
    """All patterns of ``relation`` as listed in its file (usable or not)."""
    base = pararel_root(root)
    _check_relation(relation, base)
    path = base / "patterns" / f"{relation}.jsonl"
    return [Pattern(relation, row["pattern"]) for row in _read_jsonl(path, ("pattern",))]


def load_facts(relation: str, root: str | os.PathLike | None = None) -> list[Fact]:
    """All facts of ``relation`` in file order."""
    base = pararel_root(root)
    _check_relation(relation, base)
    path = base / "tuples" / f"{relation}.jsonl"
    return [Fact(relation, row["sub_label"].strip(), row["obj_label"].strip(), row["uuid"])
            for row in _read_jsonl(path, ("sub_label", "obj_label", "uuid"))]


def usable_patterns(patterns: Sequence[Pattern]) -> list[Pattern]:
    """Patterns whose ``[Y]`` ends the sentence, duplicates (same prompt stem) removed, in file order."""
    seen, out = set(), []
    for p in patterns:
        if p.usable and p.stem not in seen:
            seen.add(p.stem)
            out.append(p)
    return out


def relations(root: str | os.PathLike | None = None, min_patterns: int = 2) -> list[str]:
    """Relations with at least ``min_patterns`` usable patterns (35 with the default, spec §8)."""
    return [r for r in available_relations(root) if len(usable_patterns(load_patterns(r, root))) >= min_patterns]


def fact_queries(fact: Fact, patterns: Sequence[Pattern]) -> list[Query]:
    """The fact's queries: ``patterns`` (already the usable ones) filled with its subject."""
    return [Query(fact.uuid, fact.relation, fact.subject, fact.obj, p.fill(fact.subject), i)
            for i, p in enumerate(patterns)]


def shuffled_facts(relation_facts: Sequence[Fact], seed: int = 0) -> list[Fact]:
    """A copy of one relation's facts in a seeded order that depends only on (seed, relation, the set of facts)."""
    facts = sorted(relation_facts, key=lambda f: (f.uuid, f.subject, f.obj))
    if not facts:
        return []
    rels = {f.relation for f in facts}
    if len(rels) > 1:
        raise ParameterError(f"shuffled_facts expects the facts of one relation, got {sorted(rels)}")
    random.Random(f"{seed}-{facts[0].relation}").shuffle(facts)
    return facts


def sample_facts(relation_facts: Sequence[Fact], n: int | None, seed: int = 0) -> list[Fact]:
    """``n`` facts of one relation drawn with ``seed``; same answer for the same seed whatever the call order."""
    return shuffled_facts(relation_facts, seed)[: n if n is not None else None]


# ------------------------------------------------------------------------------------------ model scoring


def _pad_id(lm) -> int:
    tok = lm.tokenizer
    for cand in (tok.pad_token_id, tok.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0


@torch.no_grad()
def next_token_logits_batch(lm, prompts: Sequence[str]) -> torch.Tensor:
    """Next-token logits ``[len(prompts), vocab]``: one left-padded forward pass with attention mask.

    Tokenized like :meth:`LM.encode` (default special tokens); positions restart at 0 after the padding, so the
    result matches ``lm.next_token_logits`` prompt by prompt up to float rounding.
    """
    ids = [lm.tokenizer(p).input_ids for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ParameterError(f"a prompt encodes to zero tokens: {[p for p, x in zip(prompts, ids) if not x]}")
    width = max(len(x) for x in ids)
    pad = _pad_id(lm)
    input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in ids], device=lm.device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=lm.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                   use_cache=False)
    return out.logits[:, -1].float()


def _logits_for(lm, prompts: Sequence[str], batch_size: int) -> torch.Tensor:
    if batch_size <= 1:
        return torch.stack([lm.next_token_logits(p).float() for p in prompts])
    parts = [next_token_logits_batch(lm, prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
    return torch.cat(parts)


def _score(query: Query, logits: torch.Tensor, top_k: int) -> Query:
    target = query.target_id
    rank = int((logits > logits[target]).sum().item()) + 1
    prob = float(torch.softmax(logits, -1)[target].item())
    return replace(query, rank=rank, prob=prob, correct=rank <= top_k, top_id=int(logits.argmax().item()))


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
    logits = _logits_for(lm, [q.prompt for q in queries], batch_size)
    return [_score(q, row, top_k) for q, row in zip(queries, logits)]


# ------------------------------------------------------------------------------------------ dataset


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

    def to_frame(self):
        """Tidy DataFrame: one row per query (fact columns repeated)."""
        import pandas as pd

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
        import pandas as pd

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
    import pandas as pd

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
