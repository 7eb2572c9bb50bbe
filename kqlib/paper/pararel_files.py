"""ParaRel on disk: the records (patterns, facts, queries), where the data is (argument, ``$KQLIB_PARAREL``, a
``shared/data/pararel`` checkout beside the repository, the user cache, else a download of upstream commit
:data:`PARAREL_COMMIT`), and reading it with clear errors. Layout::

    <root>/patterns/Pxxx.jsonl   {"pattern": "The native language of [X] is [Y].", ...}
    <root>/tuples/Pxxx.jsonl     {"sub_label": ..., "obj_label": ..., "uuid": ...}

A fact's queries are its relation's patterns whose ``[Y]`` ends the sentence, filled with the subject and cut
right before the object, so the model's next token is the answer (spec §8). Scoring and datasets:
:mod:`kqlib.paper.pararel`.
"""


from __future__ import annotations

import json
import os
import random
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import kqlib
from kqlib.core.models import cache_root
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
