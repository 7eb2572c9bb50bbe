"""What a reader can open and download: the fact explorer, the data under every figure, "reproduce this".

:func:`prepare_site` runs in the book's HTML build (``kqlib.book.run.runner.build_html``), after the staging and before
Jupyter Book. From the chapters' tidy tables (``_build/data/<chapter>/*.csv``, written by
:func:`kqlib.book.site.data_export.write_table`), their results JSON and their executed notebooks it

* copies every table, the results JSON, the executed notebook and its ``.py`` source into
  ``<staged book>/_site/data/<chapter>/``; ``_config.yml`` names ``_site`` in ``html_extra_path``, so Sphinx
  copies it verbatim into ``_build/html/data/<chapter>/`` (stable URLs a reader can ``pd.read_csv``);
* injects into each executed notebook (idempotently, cells tagged ``kq-injected``) a "Data and
  reproduction" block after the title: the ``kq run`` command that regenerates the chapter with the profile
  and parameters it ran with, the run record (models and fingerprints, kqlib version and git revision,
  machine, wall time) and every download with a one-line schema; and under each figure that a table names
  (``write_table(..., figure=NAME)`` and ``figures.save(fig, NAME)`` in the cell), the links to its data;
* builds the fact explorer's data, ``_site/explorer/explorer-data.js`` (one row per (model, method, fact),
  details per fact), next to the vendored page script and style (``kqlib/static/explorer.*``); the page
  ``book/explorer.md`` loads them. Everything is local: no server, no network.

Sources of the explorer: the chapters whose data holds ``consistency``, ``queries`` and ``kn_sets`` tables
(chapter 01 for every method; chapter 05 for its method and its facts), the first such chapter in toc
order winning for a (model, method, fact) both have. Classes: ``K_I`` iff the chapter's ``cs_kind`` score is
below θ, θ = the chapter's ``static_threshold`` or Otsu's threshold of that chapter's scores of the same
model and method (:func:`kqlib.paper.consistency.otsu_threshold`, as ``ki_share_table`` computes it).
"""

from __future__ import annotations

import html
import json
import math
import shlex
import shutil
from pathlib import Path
from typing import Any, Iterable

from kqlib.book.profiles import load_profile, parameters_for
from kqlib.book.report import read_results
from kqlib.book.site.data_export import read_manifest, read_table
from kqlib.paper.consistency import class_labels, jaccard, otsu_threshold

SITE = "_site"  # inside the staged book; listed in _config.yml's html_extra_path
DATA = "data"
EXPLORER = "explorer"
STATIC = Path(__file__).parent / "static"
INJECTED_TAG = "kq-injected"
EXPLORER_DOC = "book/explorer"  # the page that loads the explorer (book/explorer.md, listed in _toc.yml)
FACT_KEY_SEP = "|"
KN_CAP = 200  # knowledge neurons listed per query in a fact's detail (the strongest; the count is exact)

#: Where a fact appears after chapter 01: (chapter prefix, table, key columns, shown columns, label).
APPEARANCES = [
    ("01", "edits", ["model", "fact_id"],
     ["task", "new_obj", "n_neurons", "n_neighbors", "rel", "gen", "loc", "dppl"],
     "One-query edits (Table 2), through the KNs of one query"),
    ("02", "site_consistency", ["model", "method", "fact_id"],
     ["site", "n_queries", "mean_set_size", "cs1", "cs2"],
     "Consistency at the two neuron sites"),
    ("03", "mapping", ["model", "method", "fact_id"],
     ["pattern_index", "condition", "operation", "n_neurons", "p_before", "p_after", "d_prob", "flipped"],
     "Suppress / enhance own vs the neighbors' KNs (Figure 4)"),
    ("04", "synapses", ["model", "fact_id"],
     ["pattern_index", "set", "alpha", "n_entries", "n_kns", "d_act", "d_prob", "flipped"],
     "Scaling the knowledge synapses (Figure 5)"),
    ("05", "edits", ["model", "fact_id"],
     ["selection", "task", "n_neurons", "rel", "gen", "loc", "avg", "dppl"],
     "Editing with CAS vs N_i / N_g (Table 3)"),
]


# -------------------------------------------------------------------------------------------- helpers


def _num(v) -> Any:
    """JSON-ready scalar: NaN/inf -> None, numpy -> Python."""
    if v is None:
        return None
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _records(df, columns: Iterable[str]) -> tuple[list[str], list[list]]:
    cols = [c for c in columns if c in df.columns]
    return cols, [[_num(v) for v in row] for row in df[cols].itertuples(index=False, name=None)]


def fact_key(model: str, method: str, fact_id: str) -> str:
    return FACT_KEY_SEP.join((str(model), str(method), str(fact_id)))


def _results(build: Path, stem: str) -> dict:
    """A chapter's results ({} when it has none); a damaged file is named (:func:`kqlib.book.report.read_results`)."""

    try:
        return read_results(build / "results" / f"{stem}.json")
    except FileNotFoundError:
        return {}


def _executed_parameters(notebook: Path) -> dict:
    try:
        meta = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
    except (OSError, ValueError):
        return {}
    return dict(meta.get("parameters") or {})


# ------------------------------------------------------------------------------------- reproduce this


def _shell_word(text: str) -> str:
    """``text`` as one shell word, readably: bare, else in double quotes, else :func:`shlex.quote`."""
    if shlex.quote(text) == text:
        return text
    if not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return shlex.quote(text)


def reproduce_command(chapter: Path, parameters: dict, full: bool = False) -> str:
    """``kq run NN --profile P [-p k=v ...]``: the command that reruns ``chapter`` with ``parameters``.

    Only the parameters that differ from what the profile gives the chapter today are spelled out, unless
    ``full`` (then every parameter is)."""

    params = {k: v for k, v in parameters.items() if k != "profile"}
    profile = parameters.get("profile") or "cpu"
    try:
        defaults = parameters_for(chapter, load_profile(profile))
    except Exception:  # noqa: BLE001 - an unknown/renamed profile: spell everything out
        defaults, full = {}, True
    parts = ["kq", "run", chapter.stem.split("_")[0], "--profile", str(profile)]
    for key, value in params.items():
        if full or defaults.get(key) != value:
            parts += ["-p", _shell_word(f"{key}={value!r}")]
    return " ".join(parts)


def _run_record_html(run: dict) -> str:
    if not run:
        return "<p><b>Run record:</b> not available (the chapter wrote no results JSON).</p>"
    esc = html.escape
    fps = run.get("fingerprints") or {}
    models = ", ".join(f"{esc(m)} (fingerprint <code>{esc(str(fps.get(m, '?')))}</code>)"
                       for m in run.get("models") or []) or "none"
    dev = run.get("device") or {}
    machine = ", ".join(str(x) for x in [
        dev.get("cpu"), f"{dev.get('cpu_count')} CPUs" if dev.get("cpu_count") else None,
        f"{dev.get('torch_threads')} torch threads" if dev.get("torch_threads") else None,
        f"GPU {dev.get('gpu')}" if dev.get("gpu") else None,
        f"torch {dev.get('torch')}" if dev.get("torch") else None,
        f"Python {dev.get('python')}" if dev.get("python") else None] if x)
    return (f"<p><b>Run record:</b> models: {models}; kqlib {esc(str(run.get('kqlib_version', '?')))} at git "
            f"revision <code>{esc(str(run.get('git_revision', 'unknown')))}</code>; profile "
            f"<code>{esc(str(run.get('profile')))}</code>; machine: {esc(machine) or 'unknown'}; wall time "
            f"{esc(str(run.get('wall_time_s', '?')))} s, finished {esc(str(run.get('finished_at', '?')))}.</p>")


def _download_item(href: str, label: str, note: str, schema: str = "") -> str:
    esc = html.escape
    out = (f'<li><a class="kq-data-link" href="{esc(href)}" download>{esc(label)}</a>'
           + (f" — {esc(note)}" if note else ""))
    if schema:
        out += f'<br><span class="kq-schema" style="font-size:.8em;line-height:1.35;color:#555;display:inline-block">{esc(schema)}</span>'
    return out + "</li>"


def _top_block(stem: str, rel: str, manifest: dict, results: dict, command: str, full_command: str,
               explorer_href: str) -> str:
    esc = html.escape
    items = []
    for name, t in manifest.get("tables", {}).items():
        note = f"{t.get('description') or name} ({t.get('rows')} rows)"
        items.append(_download_item(f"{rel}{t['file']}", t["file"], note, "columns: " + t.get("schema", "")))
    if results:
        items.append(_download_item(f"{rel}{stem}.json", f"{stem}.json",
                                    "results JSON: the headline numbers (glued into the prose) and the run record"))
    items.append(_download_item(f"{rel}{stem}.ipynb", f"{stem}.ipynb", "this chapter's notebook, as executed"))
    items.append(_download_item(f"{rel}{stem}.py", f"{stem}.py", "its source (jupytext percent format)"))
    n_tables = len(manifest.get("tables", {}))
    return (
        '<div class="admonition note kq-repro">'
        '<p class="admonition-title">Data and reproduction</p>'
        f'<p><b>Reproduce this chapter</b> (in a checkout of the repository): <code class="kq-command">{esc(command)}</code></p>'
        f'<details><summary>the same with every parameter spelled out</summary><pre>{esc(full_command)}</pre></details>'
        + _run_record_html(results.get("run") or {})
        + f'<details class="kq-downloads-box"><summary><b>Downloads</b>: {n_tables} table(s) as CSV, the results JSON, '
          'the notebook as executed and its source</summary>'
          '<p>UTF-8 CSV with one header row, the schema under each link; every figure below can be redrawn from '
          'them with pandas and seaborn alone (<code>pd.read_csv(URL)</code>).</p>'
          f'<ul class="kq-downloads">{"".join(items)}</ul></details>'
        '<p>Facts, queries and knowledge neurons of this run can be browsed in the '
        f'<a class="kq-explorer-link" href="{esc(explorer_href)}">fact explorer</a>.</p>'
        '</div>')


def _figure_block(stem: str, rel: str, tables: list[tuple[str, dict]], command: str) -> str:
    esc = html.escape
    items = [_download_item(f"{rel}{t['file']}", t["file"], f"{t.get('description') or name} ({t.get('rows')} rows)",
                            "columns: " + t.get("schema", "")) for name, t in tables]
    items.append(_download_item(f"{rel}{stem}.json", f"{stem}.json", "results JSON with the run record"))
    return ('<div class="kq-figure-data" style="border-left:3px solid #4a78b0;padding:.2rem .8rem;margin:.5rem 0 1rem">'
            f'<p><b>Data behind this figure</b> · reproduce: <code class="kq-command">{esc(command)}</code></p>'
            f'<ul class="kq-downloads">{"".join(items)}</ul></div>')


def _markdown_cell(source: str, role: str, index: int):
    import nbformat  # heavy: nbformat (jsonschema), only while the site is built

    cell = nbformat.v4.new_markdown_cell(source)
    cell.metadata["tags"] = [INJECTED_TAG, role]
    cell["id"] = f"{role}-{index}"  # stable across rebuilds
    return cell


def strip_injected(nb):
    """``nb`` without the cells :func:`inject_cells` added (in place; returns it)."""
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    return nb


def inject_cells(notebook: Path, stem: str, rel: str, manifest: dict, results: dict, command: str,
                 full_command: str, explorer_href: str = "explorer.html", clean_copy: Path | None = None) -> int:
    """Insert (or replace) the "Data and reproduction" cells of one executed notebook; returns how many.
    ``clean_copy``: also write the notebook as executed (without these cells) there."""
    import nbformat  # heavy: nbformat (jsonschema), only while the site is built

    nb = strip_injected(nbformat.read(notebook, as_version=4))
    if clean_copy is not None:
        nbformat.write(nb, clean_copy)
    by_figure: dict[str, list[tuple[str, dict]]] = {}
    for name, t in manifest.get("tables", {}).items():
        for fig in t.get("figures") or []:
            by_figure.setdefault(fig, []).append((name, t))
    out, n = [], 0
    top_done = False
    for cell in nb.cells:
        out.append(cell)
        if not top_done and cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            out.append(_markdown_cell(_top_block(stem, rel, manifest, results, command, full_command, explorer_href),
                                      "kq-data-top", 0))
            top_done, n = True, n + 1
        if cell.cell_type == "code" and by_figure:
            names = [f for f in by_figure if f'"{f}"' in cell.source or f"'{f}'" in cell.source]
            has_image = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            if names and has_image:
                tables = list({name: t for f in names for name, t in by_figure[f]}.items())
                out.append(_markdown_cell(_figure_block(stem, rel, tables, command), "kq-data-figure", n))
                n += 1
    if not top_done:
        out.insert(0, _markdown_cell(_top_block(stem, rel, manifest, results, command, full_command, explorer_href),
                                     "kq-data-top", 0))
        n += 1
    nb.cells = out
    nbformat.write(nb, notebook)
    return n


# ------------------------------------------------------------------------------------- explorer data


def _otsu_by_group(cs, kind: str) -> dict:

    out = {}
    for (model, method), g in cs.groupby(["model", "method"]):
        values = g[kind].dropna().to_numpy(float)
        out[(model, method)] = otsu_threshold(values) if len(values) else math.nan
    return out


def explorer_data(build: Path, chapters: list[Path]) -> dict:
    """The explorer's rows and details from the chapters' tables in ``build/data`` (see the module doc)."""

    data_root = build / DATA
    facts: list[dict] = []
    details: dict[str, dict] = {}
    seen: set[str] = set()
    sources, warnings = [], []
    tables_of: dict[str, dict[str, Any]] = {}
    for ch in chapters:
        folder = data_root / ch.stem
        manifest = read_manifest(folder)
        tables_of[ch.stem.split("_")[0]] = (folder, manifest)
        names = set(manifest.get("tables", {}))
        if not {"consistency", "queries", "kn_sets"} <= names:
            continue
        run = _results(build, ch.stem).get("run") or {}
        params = run.get("parameters") or {}
        kind = params.get("cs_kind", "cs2")
        static = float(params.get("static_threshold", 0.3))
        cs = read_table(folder, "consistency")
        queries = read_table(folder, "queries")
        kns = read_table(folder, "kn_sets")
        lacking = {name: sorted(set(cols) - set(df.columns)) for name, cols, df in (
            ("consistency", ["model", "method", "fact_id", "n_queries", kind], cs),
            ("queries", ["model", "fact_id", "pattern_index", "prompt"], queries),
            ("kn_sets", ["model", "method", "fact_id", "pattern_index", "layer", "neuron", "score", "rel_score"], kns))}
        lacking = {k: v for k, v in lacking.items() if v}
        if lacking:
            warnings.append(f"{ch.stem}: not in the explorer, its tables lack columns {lacking}")
            continue
        otsu = _otsu_by_group(cs, kind)
        sources.append(dict(chapter=ch.stem, cs_kind=kind, static_threshold=static,
                            otsu_thresholds=[dict(model=m, method=k, theta=_num(v)) for (m, k), v in otsu.items()]))
        q_by_fact = {k: g.sort_values("pattern_index") for k, g in queries.groupby(["model", "fact_id"])}
        kn_by_query: dict[tuple, list] = {}
        kn = kns.dropna(subset=["layer", "neuron"]).sort_values(["score"], ascending=False)
        for r in kn.itertuples(index=False):
            kn_by_query.setdefault((r.model, r.method, r.fact_id, int(r.pattern_index)), []).append(
                (int(r.layer), int(r.neuron), _num(float(r.score)), _num(float(r.rel_score))))
        for r in cs.to_dict("records"):
            key = fact_key(r["model"], r["method"], r["fact_id"])
            if key in seen or r.get(kind) is None or (isinstance(r.get(kind), float) and math.isnan(r[kind])):
                continue
            seen.add(key)
            qs = q_by_fact.get((r["model"], r["fact_id"]))
            theta_o = otsu.get((r["model"], r["method"]), math.nan)
            value = float(r[kind])
            probs = qs["prob"].dropna().to_numpy(float) if qs is not None and "prob" in qs else []
            first = qs.iloc[0].to_dict() if qs is not None and len(qs) else {}

            def text(col):  # from the consistency row, else from the fact's first query
                for value in (r.get(col), first.get(col)):
                    if isinstance(value, str) and value:
                        return value
                return None

            facts.append(dict(
                key=key, model=r["model"], method=r["method"], fact_id=r["fact_id"],
                relation=text("relation"), subject=text("subject"), obj=text("obj"),
                n_queries=int(r["n_queries"]), cs1=_num(r.get("cs1")), cs2=_num(r.get("cs2")),
                pairwise=_num(r.get("pairwise")), cs_kind=kind,
                class_static=str(class_labels([value], static)[0]), theta_static=static,
                class_otsu=None if math.isnan(theta_o) else str(class_labels([value], theta_o)[0]),
                theta_otsu=_num(theta_o), mean_set_size=_num(r.get("mean_set_size")),
                union_size=_num(r.get("union_size")), intersection_size=_num(r.get("intersection_size")),
                p_min=_num(float(probs.min())) if len(probs) else None,
                p_max=_num(float(probs.max())) if len(probs) else None,
                source=ch.stem))
            q_rows, sets = [], []
            for q in (qs.itertuples(index=False) if qs is not None else []):
                pi = int(q.pattern_index)
                neurons = kn_by_query.get((r["model"], r["method"], r["fact_id"], pi), [])
                sets.append({(a, b) for a, b, _, _ in neurons})
                q_rows.append(dict(pattern_index=pi, prompt=q.prompt, prob=_num(getattr(q, "prob", None)),
                                   rank=_num(getattr(q, "rank", None)), correct=_num(getattr(q, "correct", None)),
                                   n_kns=len(neurons), kns=[list(n) for n in neurons[:KN_CAP]]))
            matrix = [[_num(jaccard(a, b)) for b in sets] for a in sets]
            details[key] = dict(queries=q_rows, jaccard=matrix, appearances=[])
    # later chapters
    for prefix, table, keys, columns, label in APPEARANCES:
        folder, manifest = tables_of.get(prefix, (None, {}))
        if folder is None or table not in manifest.get("tables", {}):
            continue
        df = read_table(folder, table)
        if not set(keys) <= set(df.columns):
            warnings.append(f"{folder.name}/{table}: lacks the key columns {sorted(set(keys) - set(df.columns))}")
            continue
        chapter = folder.name
        params = (_results(build, chapter).get("run") or {}).get("parameters") or {}
        by = {(k if isinstance(k, tuple) else (k,)): g for k, g in df.groupby(keys)}
        for f in facts:
            g = by.get(tuple(f[c] for c in keys))
            if g is None:
                continue
            cols, rows = _records(g, columns)
            method_note = params.get("edit_method") or params.get("kn_method") or params.get("method")
            details[f["key"]]["appearances"].append(dict(
                chapter=chapter, table=table, label=label, columns=cols, rows=rows,
                kn_method=None if "method" in keys else method_note,
                href=f"{chapter}.html", data=f"../{DATA}/{chapter}/{manifest['tables'][table]['file']}"))
    return {"facts": facts, "details": details, "sources": sources, "warnings": warnings, "kn_cap": KN_CAP}


def write_explorer(dest: Path, data: dict) -> Path:
    """``dest/explorer-data.js`` (``window.KQ_EXPLORER_DATA = {...}``) and the vendored script and style."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("explorer.js", "explorer.css"):
        shutil.copy2(STATIC / name, dest / name)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("</", "<\\/")  # never closes a <script> element
    out = dest / "explorer-data.js"
    out.write_text("window.KQ_EXPLORER_DATA = " + text + ";\n")
    return out


# ------------------------------------------------------------------------------------------- the site


def prepare_site(root: Path, src: Path, chapters: list[Path]) -> dict:
    """Data folders, injected "Data and reproduction" cells and the explorer in the staged book ``src``
    (``_build/executed``); called by the HTML build before Jupyter Book with the toc's notebook chapters.
    Returns a summary."""
    build = root / "_build"
    site = src / SITE
    shutil.rmtree(site, ignore_errors=True)
    (site / DATA).mkdir(parents=True)
    summary = {"chapters": {}, "facts": 0}
    for ch in chapters:
        stem = ch.stem
        rel_doc = ch.relative_to(root).with_suffix("")
        notebook = src / rel_doc.with_suffix(".ipynb")
        dest = site / DATA / stem
        dest.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(build / DATA / stem)
        for t in manifest.get("tables", {}).values():
            path = build / DATA / stem / t["file"]
            if path.exists():
                shutil.copy2(path, dest / t["file"])
        manifest["tables"] = {n: t for n, t in manifest.get("tables", {}).items() if (dest / t["file"]).exists()}
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        results = _results(build, stem)
        if results:
            shutil.copy2(build / "results" / f"{stem}.json", dest / f"{stem}.json")
        shutil.copy2(ch, dest / f"{stem}.py")
        if not notebook.exists():
            continue
        params = _executed_parameters(notebook) or (results.get("run") or {}).get("parameters") or {}
        command = reproduce_command(ch, params)
        full = reproduce_command(ch, params, full=True)
        up = "../" * (len(rel_doc.parts) - 1)
        explorer_href = up + EXPLORER_DOC + ".html"
        n = inject_cells(notebook, stem, up + f"{DATA}/{stem}/", manifest, results, command, full,
                         explorer_href=explorer_href, clean_copy=dest / f"{stem}.ipynb")
        summary["chapters"][stem] = {"tables": len(manifest["tables"]), "injected_cells": n, "command": command}
    data = explorer_data(build, chapters)
    write_explorer(site / EXPLORER, data)
    summary["facts"] = len(data["facts"])
    for line in data["warnings"]:
        print(f"[kq book] explorer: {line}", flush=True)
    return summary
