"""The tidy data behind each chapter's figures and tables, written for readers (``_build/data``).

A chapter calls, right after it has built a frame::

    data_export.write_table("01_kl_reexamination", "consistency", cs, figure="01_fig1_heatmaps")

which writes ``<build dir>/data/<chapter>/<name>.csv`` (UTF-8, comma-separated, a header row, no index, floats
in full precision, missing values empty) and records it in ``<build dir>/data/<chapter>/manifest.json``:
``{"chapter", "tables": {name: {"file", "rows", "columns": [{"name", "dtype", "description"}], "schema",
"description", "figures"}}}``. ``schema`` is the one-line summary shown under the download link in the
book; a column's description comes from ``schema=`` or from :data:`COLUMN_DOCS`.

The book build (:mod:`kqlib.book.site.explorer`) copies every table, the chapter's results JSON and its executed
notebook into the site (``_build/html/data/<chapter>/``), links them under each figure and builds the
fact explorer from these same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from kqlib.book.figures import shared_top_neurons
from kqlib.book.report import output_dir
from kqlib.errors import ParameterError

MANIFEST = "manifest.json"

#: Descriptions of the columns that recur across the chapters' tables (``schema=`` overrides them).
COLUMN_DOCS = {
    "model": "model name",
    "method": "localization method (ig | sig | amig; ∩ = all methods at once)",
    "relation": "ParaRel relation id",
    "fact_id": "ParaRel fact id (uuid)",
    "subject": "fact subject",
    "obj": "fact object (the answer)",
    "new_obj": "object the update edit installs",
    "pattern_index": "index of the query's paraphrase among the relation's usable patterns",
    "prompt": "query text (ends right before the object)",
    "target_id": "token id of the answer's first token",
    "prob": "p(answer's first token | prompt)",
    "rank": "rank of the answer's first token (1 = top-1)",
    "correct": "answer is the top-1 next token",
    "layer": "layer index (0-based)",
    "neuron": "MLP neuron index in the layer",
    "score": "attribution score",
    "rel_score": "score / max score of the query",
    "n_neurons": "number of neurons in the set",
    "max_score": "largest attribution score of the query",
    "n_queries": "queries (paraphrases) of the fact",
    "mean_set_size": "mean knowledge-neuron set size over the fact's queries",
    "union_size": "|union of the queries' KN sets|",
    "intersection_size": "|intersection of the queries' KN sets|",
    "cs1": "CS1 = |∩ N_q| / |∪ N_q|",
    "cs2": "CS2 = mean over the union of (share of queries holding the neuron)",
    "pairwise": "mean pairwise Jaccard index of the queries' KN sets",
    "k_null": "templates of the fact that enter the chance null (asked of another fact of the relation)",
    "n_null_facts": "other facts of the relation sharing those templates",
    "j_obs": "mean pairwise KN-set Jaccard of the fact's phrasings on those templates",
    "j_null": "the same for pseudo-facts (same templates, other facts of the relation), mean over draws",
    "delta_j": "j_obs − j_null: the fact's own KN overlap beyond its relation and templates",
    "p_null": "one-sided permutation p of j_obs against the pseudo-facts",
    "power": "power of the per-fact test at a shift of 0.05 (Jaccard)",
    "null_reason": "why the fact has no chance null (empty when it has one)",
    "pair_type": "what two phrasings share (same fact, template, relation)",
    "threshold_kind": "static θ or Otsu's θ",
    "threshold": "θ: K_I iff CS < θ",
    "share_ki": "share of inconsistent (K_I) facts",
    "n_ki": "number of K_I facts",
    "n_facts": "number of facts",
    "ci_low": "95 % bootstrap CI, low",
    "ci_high": "95 % bootstrap CI, high",
    "task": "edit task (erase | update)",
    "selection": "neuron selection (N_i | N_g | cas)",
    "rel": "reliability (success on the edited queries)",
    "gen": "generalization (success on held-out / neighbor queries)",
    "loc": "locality (unrelated queries unchanged)",
    "avg": "(rel + gen + loc) / 3",
    "dppl": "perplexity change on held-out sentences",
    "group": "fact class (K_C consistent | K_I inconsistent)",
    "class": "fact class at the static θ (K_C | K_I)",
    "class_otsu": "fact class at Otsu's θ (K_C | K_I)",
    "condition": "neuron set intervened on (own | union | intersection | random)",
    "operation": "suppress (× 0) | enhance (× factor) | average",
    "d_prob": "relative change of p(answer)",
    "d_act": "relative signed change of the knowledge neurons' activation",
    "p_before": "p(answer) before the intervention",
    "p_after": "p(answer) after the intervention",
    "flipped": "top-1 answer flipped",
    "alpha": "attention scaling factor",
    "set": "attention entries scaled (synapse | control)",
    "t": "per-query KN threshold t (score > t·max)",
    "theta": "consistency threshold θ",
    "site": "neuron site (post | pre)",
    "jaccard": "Jaccard index of the two KN sets",
    "mean": "mean over the units",
    "n": "number of units",
}


def data_dir() -> Path:
    """``<output dir>/data`` (:func:`kqlib.book.report.output_dir`: the build dir, or the runner's staging dir)."""

    return output_dir() / "data"


def _dtype_name(series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    values = series.dropna()
    if len(values) and all(isinstance(v, bool) for v in values):
        return "bool"
    if len(values) and all(isinstance(v, (list, tuple, set, frozenset)) for v in values):
        return "list (JSON)"
    return "str"


def _plain_frame(df):
    """A copy CSV can hold (categoricals as str, list/tuple/set/dict cells as JSON text) and its column types."""
    out = df.copy()
    if not isinstance(out.index, pd.RangeIndex) or out.index.name is not None:
        out = out.reset_index()
    out.columns = [str(c) for c in out.columns]
    dtypes = {c: _dtype_name(out[c]) for c in out.columns}
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            out[col] = s.astype(str)
        elif s.dtype == object:
            def cell(v):
                if isinstance(v, (set, frozenset)):
                    v = sorted(v)
                if isinstance(v, (list, tuple, dict)):
                    return json.dumps(v, default=str)
                return v
            out[col] = s.map(cell)
    return out, dtypes


def schema_line(columns: Iterable[Mapping[str, str]]) -> str:
    """``"model (str), cs2 (float: CS2 = ...), ..."``: the one-line schema shown under a download link."""
    parts = []
    for c in columns:
        part = f"{c['name']} ({c['dtype']}"
        if c.get("description"):
            part += f": {c['description']}"
        parts.append(part + ")")
    return "; ".join(parts)


def write_table(chapter: str, name: str, df, schema: Mapping[str, str] | None = None, figure: str | Iterable[str] | None = None,
                description: str = "") -> Path:
    """Write ``df`` as ``<build dir>/data/<chapter>/<name>.csv`` and record it (columns, dtypes, descriptions,
    the figures it is behind) in that folder's ``manifest.json``; returns the CSV's path.

    ``schema``: ``{column: description}`` for columns :data:`COLUMN_DOCS` does not describe (or to override);
    ``figure``: the name(s) given to :func:`kqlib.book.figures.save` for the figure(s) drawn from this table.
    """
    if not isinstance(df, pd.DataFrame):
        raise ParameterError(f"write_table({chapter!r}, {name!r}): expected a DataFrame, got {type(df).__name__}")
    if not name or any(ch in name for ch in "/\\ ") or name.startswith("."):
        raise ParameterError(f"table name {name!r}: use a plain file stem (letters, digits, _ and -)")
    frame, dtypes = _plain_frame(df)
    docs = {**COLUMN_DOCS, **dict(schema or {})}
    unknown = sorted(set(schema or {}) - set(frame.columns))
    if unknown:
        raise ParameterError(f"write_table({chapter!r}, {name!r}): schema names columns the table lacks: {unknown}")
    columns = [{"name": c, "dtype": dtypes[c], "description": docs.get(c, "")} for c in frame.columns]
    figures = [figure] if isinstance(figure, str) else list(figure or [])
    folder = data_dir() / chapter
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.csv"
    tmp = out.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False, float_format="%.17g")
    os.replace(tmp, out)
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {"chapter": chapter, "tables": {}}
    manifest["tables"][name] = {"file": out.name, "rows": int(len(frame)), "columns": columns,
                                "schema": schema_line(columns), "description": description, "figures": figures}
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, manifest_path)
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of one chapter's data folder (``{"chapter", "tables": {}}`` when there is none)."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"chapter": Path(folder).name, "tables": {}}


def read_table(folder: str | Path, name: str):
    """A table written by :func:`write_table`, back as a DataFrame (JSON-text list columns parsed)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    df = pd.read_csv(folder / f"{name}.csv", keep_default_na=False, na_values=[""])
    for col in manifest.get("tables", {}).get(name, {}).get("columns", []):
        if col["dtype"] == "list (JSON)" and col["name"] in df:
            df[col["name"]] = df[col["name"]].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    return df


def score_frame(scores, prompts, n_per_layer: int = 12):
    """The cells of :func:`kqlib.book.figures.query_heatmaps` as a tidy frame: one row per (query, layer, shown
    neuron) with the raw ``score`` and ``rel_score`` = score / the query's max, clipped at 0 (what is drawn)."""

    s = np.asarray(scores, dtype=np.float64)
    cols = shared_top_neurons(s, n_per_layer)
    rows = []
    for qi, (q, prompt) in enumerate(zip(s, prompts)):
        top = q.max()
        rel = np.clip(q / (top if top > 0 else 1.0), 0, None)
        for layer in range(q.shape[0]):
            for col, neuron in enumerate(cols[layer]):
                rows.append(dict(query=qi, prompt=prompt, layer=layer, column=col, neuron=int(neuron),
                                 score=float(q[layer, neuron]), rel_score=float(rel[layer, neuron])))
    return pd.DataFrame(rows, columns=["query", "prompt", "layer", "column", "neuron", "score", "rel_score"])
