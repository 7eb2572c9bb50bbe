"""What a chapter reports: tables, the results JSON with its run record, and numbers glued into the prose.

Each chapter ends with ``write_results(chapter, numbers, run_record(...))``, which writes
``_build/results/<chapter>.json``; the tests and the paper-vs-run tables read those files.
"""

from __future__ import annotations

import ast
import json
import math
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kqlib import __version__
from kqlib.book.claims.verdicts import (
    COLOURS as VERDICT_COLOURS,  # noqa: F401  (the one colour scheme; kept under its old name)
)
from kqlib.book.claims.verdicts import table
from kqlib.errors import DataError, ParameterError
from kqlib.paper.stats import finite_or_none  # noqa: F401 (the chapters call report.finite_or_none)


def book_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) holding ``_toc.yml``, else ``None``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder
    return None


def build_dir() -> Path:
    """``$KQ_BUILD_DIR`` (set by ``kq book``/``kq run``), else ``<book root>/_build``, else ``./_build``."""
    if os.environ.get("KQ_BUILD_DIR"):
        return Path(os.environ["KQ_BUILD_DIR"])
    root = book_root()
    return (root or Path.cwd()) / "_build"


def results_dir() -> Path:
    """Where the chapters' results are read from: ``<build dir>/results``."""
    return build_dir() / "results"


def output_dir() -> Path:
    """Where a chapter writes its outputs (results, tidy data, figures): ``$KQ_OUTPUT_DIR`` when the runner
    stages them (it moves them into the build dir only when the chapter finished), else the build dir."""
    if os.environ.get("KQ_OUTPUT_DIR"):
        return Path(os.environ["KQ_OUTPUT_DIR"])
    return build_dir()


# ------------------------------------------------------------------------------------------- notebook


def quiet() -> None:
    """Keep library noise out of rendered pages: tqdm's IProgress warning, transformers' progress bars."""

    warnings.filterwarnings("ignore", message=".*IProgress.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
    try:
        from transformers.utils import logging as hf_logging  # heavy: transformers, only to quiet it

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    say_empty_tables()


EMPTY_TABLE = ("Empty table: nothing of this kind in this run (the model keeps too few facts or queries for it: "
               "see the scan counts above; `kq data --model NAME` lists the facts a model knows).")


def table_html(obj) -> str | None:
    """HTML of a table (DataFrame or Styler) for a page: a sentence saying it is empty, and why, when it has no
    row; else its own HTML."""
    frame = getattr(obj, "data", obj)
    if getattr(frame, "empty", False):
        return f"<p><em>{EMPTY_TABLE}</em></p>"
    return obj._repr_html_()


def say_empty_tables() -> None:
    """In a notebook kernel, show every empty table as :data:`EMPTY_TABLE` (:func:`table_html`), never as a bare
    header; outside IPython nothing changes."""
    try:
        from IPython import get_ipython  # optional: IPython (a notebook kernel; elsewhere nothing to do)
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from pandas.io.formats.style import Styler  # heavy: pandas' Styler (jinja2), only in a notebook kernel

    html = shell.display_formatter.formatters["text/html"]
    for kind in (pd.DataFrame, Styler):
        html.for_type(kind, table_html)


# --------------------------------------------------------------------------------------------- tables


def model_size(lm) -> dict[str, Any]:
    """Sizes of a loaded model: total parameters, non-embedding parameters (total minus the input embedding
    and an untied output embedding), and MLP neurons = neurons per layer × layers (the units this book
    localizes). "The smaller model" is ordered by MLP neurons: Gemma3-270M has more parameters than
    SmolLM2-135M (its 262k-token embedding) but fewer MLP neurons (18 × 2048 = 36,864 vs 30 × 1536 = 46,080)."""
    params = list(lm.model.parameters())
    total = sum(p.numel() for p in params)
    emb = 0
    seen = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        mod = getattr(lm.model, get, lambda: None)()
        w = getattr(mod, "weight", None)
        if w is not None and id(w) not in seen:
            seen.add(id(w))
            emb += w.numel()
    return {"parameters": int(total), "non_embedding_parameters": int(total - emb),
            "mlp_neurons": int(lm.n_layers * lm.n_neurons)}


def order_by_size(sizes: Mapping[str, Mapping[str, Any]], key: str = "mlp_neurons") -> list[str]:
    """Model names from the smallest to the largest by ``key`` of :func:`model_size` (name breaks ties)."""
    return sorted(sizes, key=lambda m: (sizes[m][key], m))


def model_table(lms: Sequence) -> "Any":
    """One row per loaded :class:`~kqlib.core.models.LM`: family, layers, neurons, MLP neurons, parameters (total and
    non-embedding), fingerprint, load time."""
    rows = []
    for lm in lms:
        size = model_size(lm)
        rows.append({
            "model": lm.name,
            "family": lm.family.name,
            "layers": lm.n_layers,
            "neurons per layer": lm.n_neurons,
            "MLP neurons": size["mlp_neurons"],
            "parameters (M)": round(size["parameters"] / 1e6, 1),
            "non-embedding parameters (M)": round(size["non_embedding_parameters"] / 1e6, 1),
            "fingerprint": lm.fingerprint,
            "load time (s)": round(float(getattr(lm, "load_seconds", float("nan"))), 2),
            "device": str(lm.device),
        })
    return pd.DataFrame(rows).set_index("model")


def paper_vs_run_table(rows: Iterable[Mapping[str, Any]], link: bool = False):
    """The "Paper vs this run" table of claim rows (:func:`kqlib.book.claims.verdicts.claim_row`), one vocabulary and one
    colour scheme (:data:`kqlib.book.claims.verdicts.COLOURS`) for every chapter and the scorecard."""

    return table(list(rows), link=link)


# ----------------------------------------------------------------------------------------- run record


def git_revision(path: str | Path | None = None) -> str:
    """``HEAD``'s hash (``+dirty`` when the tree has changes), or ``"unknown"`` outside a git checkout."""
    cwd = str(path or book_root() or Path.cwd())
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def run_record(lms: Sequence, parameters: Mapping[str, Any], started: float, profile: str | None = None) -> dict:
    """Provenance of a chapter's numbers: models and fingerprints, versions, profile, parameters, timing."""
    return {
        "models": [lm.name for lm in lms],
        "fingerprints": {lm.name: lm.fingerprint for lm in lms},
        "kqlib_version": __version__,
        "git_revision": git_revision(),
        "profile": profile if profile is not None else parameters.get("profile"),
        "parameters": dict(parameters),
        "wall_time_s": round(time.time() - started, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": {"model_devices": sorted({str(lm.device) for lm in lms}), **device_info()},
    }


def _plain(value: Any) -> Any:
    """numpy/torch scalars and containers -> JSON-ready Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def records(df) -> list[dict]:
    """A DataFrame as JSON-ready rows: floats through :func:`finite_or_none`, integer lists as ``int``s."""
    def plain(v):
        if isinstance(v, (float, np.floating)):
            return finite_or_none(v)
        if isinstance(v, list):
            return [int(x) if isinstance(x, (int, np.integer)) else x for x in v]
        return v

    return [{k: plain(v) for k, v in r.items()} for r in df.astype(object).to_dict("records")]


def _non_finite(value, path: str = "numbers"):
    """``(path, value)`` of the first NaN / infinity anywhere in a nested structure, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, Mapping):
        items = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for p, v in items:
        found = _non_finite(v, p)
        if found:
            return found
    return None


def write_results(chapter: str, numbers: Mapping[str, Any], run: Mapping[str, Any]) -> Path:
    """Write ``_build/results/<chapter>.json`` = ``{"chapter", "numbers", "run"}``; returns its path."""
    numbers = _plain(numbers)
    bad = _non_finite(numbers)
    if bad:
        path, value = bad
        raise ParameterError(f"result {path} of chapter {chapter} is {value}: refusing to record it (JSON has no "
                             "NaN/inf; map a missing value to None, e.g. with report.finite_or_none)")
    out = output_dir() / "results" / f"{chapter}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    text = json.dumps({"chapter": chapter, "numbers": numbers, "run": _plain(run)}, indent=2, allow_nan=False)
    tmp.write_text(text + "\n")
    os.replace(tmp, out)
    return out


def read_results(path: str | Path) -> dict[str, Any]:
    """A chapter's results file, checked: ``{"chapter", "numbers": {...}, "run": {...}}``. A missing file raises
    FileNotFoundError; a damaged or wrongly shaped one :class:`~kqlib.errors.DataError` naming the file and what
    to do (rerun its chapter, or delete the file)."""

    path = Path(path)
    text = path.read_text()
    try:
        data = json.loads(text)
        problem = None
    except ValueError as exc:
        data, problem = None, f"is not valid JSON ({exc}; truncated?)"
    if problem is None:
        if not isinstance(data, dict):
            problem = f"holds a {type(data).__name__}, not the results object kq writes"
        elif not isinstance(data.get("numbers"), dict) or not isinstance(data.get("run", {}), dict):
            problem = "lacks the `numbers` / `run` objects kq writes"
        elif not isinstance(data["numbers"].get("claims", []), list):
            problem = "has `numbers.claims` that is not a list of claim rows"
    if problem:
        raise DataError(f"The results file {path} {problem}. Rerun its chapter (`kq run {path.stem[:2]}`), "
                        f"or delete the file if that chapter is not part of this build.")
    return data


def glue_numbers(numbers: Mapping[str, Any]) -> None:
    """``myst_nb.glue`` each number (as a plain Python value, not displayed) under its key."""
    from myst_nb import glue  # optional: myst_nb (the book extra, via jupyter-book; in a book notebook)

    for key, value in _plain(numbers).items():
        glue(key, value, display=False)


def read_glued(notebook: str | Path) -> dict[str, Any]:
    """``{key: value}`` of the numbers glued in an executed notebook (parsed from their text form)."""
    import nbformat  # heavy: nbformat (jsonschema), only to read an executed notebook

    nb = nbformat.read(str(notebook), as_version=4)
    out: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook", {})
            if "name" in meta:
                text = output.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
                try:
                    out[meta["name"]] = ast.literal_eval(text)
                except (ValueError, SyntaxError, TypeError):
                    out[meta["name"]] = text
    return out
