"""Resuming ``kq book``: the inputs a chapter was executed from (source, parameters, kqlib source digest, model
identities, executor), recorded next to its executed notebook; a chapter is up to date when they are unchanged."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

from kqlib.errors import KqError
from kqlib.book.toc import executed_path



# ------------------------------------------------------------------------------------ resume (inputs)


def inputs_path(executed: Path) -> Path:
    """The input record next to an executed notebook: ``NN_name.inputs.json``."""
    return executed.with_name(executed.stem + ".inputs.json")


def kqlib_digest() -> str:
    """sha256 over kqlib's own source files (``*.py``, ``*.toml`` in every subpackage): any change counts."""
    import hashlib

    h = hashlib.sha256()
    base = Path(__file__).resolve().parents[2]  # the kqlib package
    for path in sorted(list(base.rglob("*.py")) + list(base.rglob("*.toml"))):
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def model_identity(name: str) -> str:
    """What identifies a model's weights without loading it: an embedded model's GGUF sha256, a local
    folder's file names/sizes/mtimes, else the name (a hub id)."""
    import hashlib

    from kqlib.core.models import EMBEDDED

    if name in EMBEDDED:
        try:
            return f"{name}@sha256:{EMBEDDED[name].locate()[1][:16]}"
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
    from kqlib.core.models import check_model_name

    for name in dict.fromkeys(n for _, params in plans for n in model_names(params)):
        check_model_name(name)


def chapter_inputs(root: Path, chapter: Path, params: Mapping[str, Any], executor: str = "local") -> dict:
    """Everything a chapter's executed notebook depends on: its source, parameters, kqlib's version and
    source digest, the models' identities and the executor."""
    import hashlib

    from kqlib import __version__

    names = model_names(params)
    return dict(chapter=str(chapter.relative_to(root)),
                source=hashlib.sha256(chapter.read_bytes()).hexdigest()[:16],
                parameters=json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
                kqlib_version=__version__, kqlib_source=kqlib_digest(),
                models={n: model_identity(n) for n in names}, executor=executor)


def inputs_digest(inputs: Mapping[str, Any]) -> str:
    import hashlib

    keys = ("chapter", "source", "parameters", "kqlib_version", "kqlib_source", "models", "executor")
    return hashlib.sha256(json.dumps({k: inputs.get(k) for k in keys}, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def up_to_date(root: Path, chapter: Path, inputs: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the executed notebook of ``chapter`` was made from exactly ``inputs``; and why not."""
    final = executed_path(root, chapter)
    if not final.exists():
        return False, "not executed yet"
    try:
        old = json.loads(inputs_path(final).read_text())
    except (OSError, ValueError):
        return False, "no input record from its last execution"
    if old.get("digest") == inputs_digest(inputs):
        return True, f"unchanged since its execution at {old.get('executed_at', '?')}"
    labels = {"source": "chapter source", "parameters": "parameters", "kqlib_version": "kqlib version",
              "kqlib_source": "kqlib source", "models": "models", "executor": "executor", "chapter": "chapter"}
    changed = [label for k, label in labels.items() if old.get(k) != json.loads(json.dumps(inputs.get(k), default=str))]
    return False, "changed: " + (", ".join(changed) or "input record")
