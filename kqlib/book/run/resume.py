"""Resuming ``kq book``: the inputs a chapter was executed from (source, parameters, kqlib source digest, model
identities, executor, and the data it reads: the ParaRel files of its relations, the other chapters' results),
recorded next to its executed notebook with the digests of its own outputs; a chapter is up to date when its
inputs are unchanged and its outputs are still the ones it wrote."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from kqlib import __version__
from kqlib.book.toc import BUILD, executed_path, notebook_chapters
from kqlib.core import models
from kqlib.errors import DataError, KqError
from kqlib.paper.pararel_files import pararel_root



# ------------------------------------------------------------------------------------ resume (inputs)


def inputs_path(executed: Path) -> Path:
    """The input record next to an executed notebook: ``NN_name.inputs.json``."""
    return executed.with_name(executed.stem + ".inputs.json")


def kqlib_digest() -> str:
    """sha256 over kqlib's own source files (``*.py``, ``*.toml`` in every subpackage): any change counts."""
    h = hashlib.sha256()
    base = Path(__file__).resolve().parents[2]  # the kqlib package
    for path in sorted(list(base.rglob("*.py")) + list(base.rglob("*.toml"))):
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def model_identity(name: str) -> str:
    """What identifies a model's weights without loading it: an embedded model's GGUF sha256, a local
    folder's file names/sizes/mtimes, else the name (a hub id)."""
    if name in models.EMBEDDED:
        try:
            return f"{name}@sha256:{models.EMBEDDED[name].locate()[1][:16]}"
        except KqError:
            return name
    folder = Path(name)
    if folder.is_dir():
        h = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            st = path.stat()
            h.update(f"{path.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"{name}@files:{h.hexdigest()[:16]}"
    return name


def model_names(params: Mapping[str, Any]) -> list[str]:
    """The model names among a chapter's parameters (``models`` list or ``model`` string)."""
    names: list[str] = []
    for key in ("models", "model"):
        value = params.get(key)
        names += [value] if isinstance(value, str) else [v for v in (value or []) if isinstance(v, str)]
    return names


def check_models(plans) -> None:
    """Refuse, before any chapter runs, a model name or folder no chapter could load."""
    for name in dict.fromkeys(n for _, params in plans for n in model_names(params)):
        models.check_model_name(name)


def file_digest(path: Path) -> str | None:
    """sha256 (16 hex digits) of a file's bytes; None when it does not exist or cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def pararel_input(chapter: Path, params: Mapping[str, Any]) -> dict | None:
    """The ParaRel data a chapter reads (None for a chapter without a ``relations`` parameter): the data folder
    its kernel resolves (``$KQLIB_PARAREL``, a shared checkout beside the chapter's folder or the repository, the
    download) and the digest of the pattern and tuple files of its relations (all of them when ``[]``)."""
    if "relations" not in params:
        return None
    try:
        with contextlib.chdir(chapter.parent):  # where the chapter's kernel runs
            folder = pararel_root(download=False).resolve()
    except KqError:
        return {"dir": None, "digest": None}  # not here yet: the chapter downloads it
    relations = list(params.get("relations") or [])
    if relations:
        files = [folder / sub / f"{r}.jsonl" for r in relations for sub in ("patterns", "tuples")]
    else:
        files = sorted(list((folder / "patterns").glob("*.jsonl")) + list((folder / "tuples").glob("*.jsonl")))
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(folder)}={file_digest(path)}\n".encode())
    return {"dir": str(folder), "digest": h.hexdigest()[:16]}


def reads_results(chapter: Path) -> bool:
    """Whether a chapter reads the other chapters' results files (the scorecard: ``report.results_dir()``)."""
    source = chapter.read_text()
    return "results_dir()" in source or "scorecard.collect(" in source


def results_path(root: Path, stem: str) -> Path:
    return root / BUILD / "results" / f"{stem}.json"


def results_input(root: Path, chapter: Path) -> dict | None:
    """``{other chapter: digest of its results JSON (None: none)}`` for a chapter that reads them, else None."""
    if not reads_results(chapter):
        return None
    return {ch.stem: file_digest(results_path(root, ch.stem)) for ch in notebook_chapters(root) if ch != chapter}


def stale_readers(root: Path) -> dict[str, list[str]]:
    """``{chapter: [other chapters whose results changed since it was executed]}`` for the executed chapters that
    read other chapters' results (the scorecard); empty when every such page matches the current results."""
    out = {}
    for ch in notebook_chapters(root):
        final = executed_path(root, ch)
        if not (final.exists() and reads_results(ch)):
            continue
        try:
            old = (read_record(final) or {}).get("results")
        except KqError:
            old = None
        now = results_input(root, ch)
        if old != now:
            out[ch.stem] = sorted(s for s in set(old or {}) | set(now) if (old or {}).get(s) != now.get(s))
    return out


def chapter_outputs(root: Path, chapter: Path) -> dict:
    """Digests of what a chapter wrote: its results JSON and the files of its tidy-data folder."""
    data = root / BUILD / "data" / chapter.stem
    files = sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else []
    return {"results": file_digest(results_path(root, chapter.stem)),
            "data": {str(p.relative_to(data)): file_digest(p) for p in files}}


def chapter_inputs(root: Path, chapter: Path, params: Mapping[str, Any], executor: str = "local") -> dict:
    """Everything a chapter's executed notebook depends on: its source, parameters, kqlib's version and
    source digest, the models' identities, the executor, the ParaRel data it reads (:func:`pararel_input`) and
    the other chapters' results it reads (:func:`results_input`)."""
    names = model_names(params)
    return dict(chapter=str(chapter.relative_to(root)),
                source=hashlib.sha256(chapter.read_bytes()).hexdigest()[:16],
                parameters=json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
                kqlib_version=__version__, kqlib_source=kqlib_digest(),
                models={n: model_identity(n) for n in names}, executor=executor,
                pararel=pararel_input(chapter, params), results=results_input(root, chapter))


_DIGEST_KEYS = ("chapter", "source", "parameters", "kqlib_version", "kqlib_source", "models", "executor",
                "pararel", "results")


def inputs_digest(inputs: Mapping[str, Any]) -> str:
    def part(k):  # the ParaRel folder's path is shown, its content counts
        v = inputs.get(k)
        return v.get("digest") if k == "pararel" and isinstance(v, Mapping) else v

    return hashlib.sha256(json.dumps({k: part(k) for k in _DIGEST_KEYS}, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def read_record(final: Path) -> dict | None:
    """The input record beside an executed notebook; None when there is none. A damaged one (not a JSON
    object) raises :class:`~kqlib.errors.DataError` naming the file and what to do."""
    path = inputs_path(final)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"Cannot read the input record {path}: {exc}. Delete it (the chapter is then "
                        "re-executed) or fix its permissions.") from None
    try:
        old = json.loads(text)
    except ValueError:
        old = None
    if not isinstance(old, dict):
        raise DataError(f"The input record {path} is damaged (not the JSON object kq writes: "
                        f"{text[:60].strip()!r}). Delete it: the chapter is then re-executed by `kq book`.")
    return old


def up_to_date(root: Path, chapter: Path, inputs: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the executed notebook of ``chapter`` was made from exactly ``inputs`` and its outputs are the
    ones that execution wrote; and why not."""
    final = executed_path(root, chapter)
    if not final.exists():
        return False, "not executed yet"
    try:
        old = read_record(final)
    except KqError as exc:
        return False, f"damaged input record ({str(exc).split('. ')[0]})"
    if old is None:
        return False, "no input record from its last execution"
    if old.get("digest") == inputs_digest(inputs):
        if "outputs" in old and old["outputs"] != chapter_outputs(root, chapter):
            return False, ("its results or data files changed since its execution (written by another run, "
                           "or damaged)")
        return True, f"unchanged since its execution at {old.get('executed_at', '?')}"
    labels = {"source": "chapter source", "parameters": "parameters", "kqlib_version": "kqlib version",
              "kqlib_source": "kqlib source", "models": "models", "executor": "executor", "chapter": "chapter",
              "pararel": "ParaRel data"}
    now = json.loads(json.dumps(dict(inputs), default=str))
    def digest(v):
        return v.get("digest") if isinstance(v, Mapping) else v

    changed = [label for k, label in labels.items()
               if (digest(old.get(k)) != digest(now.get(k)) if k == "pararel" else old.get(k) != now.get(k))]
    if old.get("results") != now.get("results"):
        before, after = old.get("results") or {}, now.get("results") or {}
        stems = sorted(s for s in set(before) | set(after) if before.get(s) != after.get(s))
        changed.append("results of " + ", ".join(stems))
    return False, "changed: " + (", ".join(changed) or "input record")


def publish(root: Path, chapter: Path, notebook: Path, staged: Path, inputs: Mapping[str, Any] | None) -> None:
    """Move a finished chapter's outputs into the build: its tidy-data folder replaced as a whole, every other
    staged file (results JSON, figures, ...) replaced one by one, then the notebook; the input record (with the
    digests of those outputs) last. The old record goes first, so a crash in between never leaves a record
    that matches outputs it did not describe."""
    build = root / BUILD
    final = executed_path(root, chapter)
    inputs_path(final).unlink(missing_ok=True)
    data = staged / "data" / chapter.stem
    if data.is_dir():
        dest = build / "data" / chapter.stem
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(data, dest)
        shutil.rmtree(old, ignore_errors=True)
    for path in sorted(p for p in staged.rglob("*") if p.is_file()) if staged.is_dir() else []:
        dest = build / path.relative_to(staged)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    shutil.rmtree(staged, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(notebook, final)
    if inputs is not None:
        record = dict(inputs, digest=inputs_digest(inputs), outputs=chapter_outputs(root, chapter),
                      executed_at=time.strftime("%Y-%m-%d %H:%M:%S"))
        target = inputs_path(final)
        part = target.with_name(f".{target.name}.tmp")
        part.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(part, target)
