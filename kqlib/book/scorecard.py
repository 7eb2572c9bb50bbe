"""The scorecard: one row per claim × model, collected from the chapters' results JSON (never typed by hand).

Every chapter writes its judged claims (:func:`kqlib.book.verdicts.claim_row`) into
``_build/results/<chapter>.json`` under ``numbers["claims"]``. :func:`collect` reads them back in the order of
``kqlib/claims.toml``; a claim whose chapter has not been run (or wrote no row for it) gets a row
"not measurable here: its chapter has not been run", so the scorecard always lists every claim.

The book's last notebook (``book/07_scorecard.py``) calls :func:`collect`, shows :func:`table` and writes it
with :func:`write_table` beside the executed chapters; the page ``book/scorecard.md`` near the front includes
that file (``{raw} html`` with ``:file:``), so Sphinx rebuilds the page whenever the table changes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from kqlib.book import verdicts as V


def chapter_results(results_dir: str | Path) -> dict[str, dict]:
    """``{chapter: results JSON}`` of every ``*.json`` in ``results_dir``; a damaged one is an error naming the
    file and what to do (:func:`kqlib.book.report.read_results`), never a chapter "not run"."""
    from kqlib.book.report import read_results

    out = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            out[path.stem] = read_results(path)
        except FileNotFoundError:
            continue
    return out


def collect(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every claim of claims.toml with this run's rows (one per model), in claims.toml order."""
    results = chapter_results(results_dir)
    rows: list[dict] = []
    for c in V.claims():
        data = results.get(c.chapter)
        mine = [r for r in (data or {}).get("numbers", {}).get("claims", []) if r.get("claim") == c.id]
        if not mine:
            why = "its chapter has not been run" if data is None else "its chapter wrote no row for it"
            mine = [V.claim_row(c.id, "–", why_not=why)]
        for r in mine:
            run = (data or {}).get("run", {})
            rows.append({**r, "profile": run.get("profile"), "run_finished_at": run.get("finished_at")})
    return rows


def counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rows per verdict, every verdict listed (0 when absent)."""
    c = Counter(r["verdict"] for r in rows)
    return {v: int(c.get(v, 0)) for v in V.VERDICTS}


def frame(rows: Iterable[Mapping[str, Any]]):
    """One row per claim × model: headline number, claim, model, the paper's value (source), this run's
    estimate [95 % CI] (n), verdict with its reason, link to the chapter's "Paper vs this run" section."""
    import pandas as pd

    out = []
    for r in rows:
        out.append({
            "#": r["headline"] or "",
            "claim": r["text"],
            "model": r["model"],
            "paper": f"{r['paper']} ({r['source']})",
            "this run": r["this_run"],
            "verdict": r["verdict"] + (f": {r['reason']}" if r["reason"] else ""),
            "chapter": f'<a href="{r["chapter"]}.html#paper-vs-this-run">{r["chapter"]}</a>',
        })
    return pd.DataFrame(out, columns=["#", "claim", "model", "paper", "this run", "verdict", "chapter"])


def table(rows: Iterable[Mapping[str, Any]]):
    """The styled scorecard (verdict cells in the book's one colour scheme; links rendered)."""
    df = frame(list(rows))
    return df.style.hide(axis="index").map(V.shade, subset=["verdict"]).format(escape=None)


TABLE_FILE = "scorecard_table.html"


def write_table(rows: Iterable[Mapping[str, Any]], chapter_dir: str | Path | None = None) -> Path:
    """Write the scorecard's HTML beside the executed chapters (``<build>/executed/<chapter folder>/``), where
    ``book/scorecard.md`` reads it with ``{raw} html :file:``. A file (not a cross-document glue) so that
    Sphinx records the dependency and rebuilds the scorecard page whenever the table changes."""
    import os

    from kqlib.book.report import book_root, output_dir

    here = Path(chapter_dir or os.getcwd()).resolve()
    root = book_root(here)
    rel = here.relative_to(root) if root is not None else Path(".")
    out = output_dir() / "executed" / rel / TABLE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(table(list(rows)).to_html())
    os.replace(tmp, out)
    return out
