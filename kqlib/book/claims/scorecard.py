"""The scorecard: one row per claim × model, collected from the chapters' results JSON (never typed by hand).

Every chapter writes its judged claims (:func:`kqlib.book.claims.verdicts.claim_row`) into
``_build/results/<chapter>.json`` under ``numbers["claims"]``. :func:`collect` reads them back in the order of
``kqlib/book/claims/claims.toml``; a claim whose chapter has not been run (or wrote no row for it) gets a row
"not measurable here: its chapter has not been run", so the scorecard always lists every claim.

The book's last notebook (``book/99_scorecard.py``) calls :func:`collect`, shows :func:`table` and writes it
with :func:`write_table` beside the executed chapters; the page ``book/scorecard.md`` near the front includes
that file (``{raw} html`` with ``:file:``), so Sphinx rebuilds the page whenever the table changes.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from kqlib.book.claims import verdicts as V
from kqlib.book.report import book_root, output_dir, read_results


def chapter_results(results_dir: str | Path) -> dict[str, dict]:
    """``{chapter: results JSON}`` of every ``*.json`` in ``results_dir``; a damaged one is an error naming the
    file and what to do (:func:`kqlib.book.report.read_results`), never a chapter "not run"."""
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
    """One row per claim × model: headline number, role (primary: the headline claim's row, with its Holm-adjusted
    p across the model's primary family and the adjusted verdict where it differs; else secondary), claim,
    model, the paper's value (source), this run's estimate [95 % CI] (n), the chapter's verdict with its
    reason, link to the chapter's "Paper vs this run" section."""
    out = []
    rows = list(rows)
    adjusted = V.holm_family(rows)
    for r, a in zip(rows, adjusted):
        role = a["role"]
        if role == "primary" and a.get("p_holm") is not None:
            role += f" (Holm p = {a['p_holm']:.2g} of {a['family']}" + (
                f": {a['verdict']})" if a["verdict"] != r["verdict"] else ")")
        out.append({
            "role": role,
            "#": r["headline"] or "",
            "claim": r["text"],
            "model": r["model"],
            "paper": f"{r['paper']} ({r['source']})",
            "this run": r["this_run"],
            "verdict": r["verdict"] + (f": {r['reason']}" if r["reason"] else ""),
            "chapter": f'<a href="{r["chapter"]}.html#paper-vs-this-run">{r["chapter"]}</a>',
        })
    return pd.DataFrame(out, columns=["#", "role", "claim", "model", "paper", "this run", "verdict", "chapter"])


def table(rows: Iterable[Mapping[str, Any]]):
    """The styled scorecard (verdict cells in the book's one colour scheme; links rendered)."""
    df = frame(list(rows))
    return df.style.hide(axis="index").map(V.shade, subset=["verdict"]).format(escape=None)


# ----------------------------------------------------------------- the headline family at a glance


def headline_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The primary rows (one per headline claim of spec §6 and model), Holm-adjusted across each model's family
    (:func:`kqlib.book.claims.verdicts.holm_family`), in headline order."""
    out = [r for r in V.holm_family(list(rows)) if r["role"] == "primary"]
    return sorted(out, key=lambda r: (r["headline"], str(r["model"])))


def grid(rows: Iterable[Mapping[str, Any]]):
    """Headline claims × models: the Holm-adjusted verdict of each primary row ("–" where a claim has no row
    for that model; a claim judged across models sits in the column "all")."""
    head = headline_rows(rows)
    models = sorted({r["model"] for r in head if r["model"] not in ("–", "all")}, key=str)
    models += [m for m in ("all",) if any(r["model"] == m for r in head)]
    out = {}
    for r in head:
        name = f"{r['headline']}. {r['text']}"
        out.setdefault(name, {m: "–" for m in models})
        if r["model"] in models:
            out[name][r["model"]] = r["verdict"]
        elif r["model"] == "–":
            out[name] = {m: r["verdict"] for m in models} or {"–": r["verdict"]}
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = "headline claim"
    return df


def grid_styled(rows: Iterable[Mapping[str, Any]]):
    df = grid(rows)
    return df.style.map(V.shade)


def forest_figure(rows: Iterable[Mapping[str, Any]]):
    """Each primary row with an estimate: estimate − null with its 95 % interval (0 = the claim's null), the
    paper's pre-stated effect (claims.toml ``effect``) marked as a diamond, coloured by the adjusted verdict."""
    import matplotlib.pyplot as plt  # heavy: matplotlib, only to draw the figure

    head = [r for r in headline_rows(rows) if r.get("estimate") is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(head), 2) + 1.2))
    edge = {V.HOLDS: "#1e7e34", V.DIFFERS: "#bd2130", V.INCONCLUSIVE: "#6c757d", V.NOT_MEASURABLE: "#b8860b"}
    for y, r in enumerate(head[::-1]):
        c = V.claim(r["claim"])
        est = r["estimate"] - c.null
        lo = (r["ci_low"] - c.null) if r.get("ci_low") is not None else est
        hi = (r["ci_high"] - c.null) if r.get("ci_high") is not None else est
        ax.errorbar(est, y, xerr=[[max(est - lo, 0)], [max(hi - est, 0)]], fmt="o", capsize=3,
                    color=edge.get(r["verdict"], "black"))
        if c.effect is not None:
            ax.plot(c.effect - c.null, y, marker="D", color="#7952b3", markersize=6, linestyle="none")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(head)), [f"{r['headline']}. {r['claim']} ({r['model']})" for r in head[::-1]])
    ax.set_xlabel("estimate − the claim's null (95 % interval); ◆ the paper's effect")
    ax.set_title("Headline claims: this run against the null")
    fig.tight_layout()
    return fig


def reason_rows_html(rows: Iterable[Mapping[str, Any]]) -> str:
    """The scorecard as HTML with each row's long reason in a full-width row under it (not a narrow column)."""
    df = frame(list(rows))
    cols = [c for c in df.columns if c != "verdict"] + ["verdict"]
    out = ['<table class="scorecard"><thead><tr>' + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead><tbody>"]
    for r, src in zip(df.to_dict("records"), rows):
        colour = V.COLOURS.get(src["verdict"], "")
        cells = "".join(f"<td>{r[c]}</td>" for c in cols[:-1])  # as the styled table: links stay links
        out.append(f'<tr>{cells}<td style="background-color: {colour}">{src["verdict"]}</td></tr>')
        if src.get("reason"):
            out.append(f'<tr class="reason"><td colspan="{len(cols)}"><em>{src["reason"]}</em></td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


TABLE_FILE = "scorecard_table.html"


def write_table(rows: Iterable[Mapping[str, Any]], chapter_dir: str | Path | None = None) -> Path:
    """Write the scorecard's HTML beside the executed chapters (``<build>/executed/<chapter folder>/``), where
    ``book/scorecard.md`` reads it with ``{raw} html :file:``. A file (not a cross-document glue) so that
    Sphinx records the dependency and rebuilds the scorecard page whenever the table changes."""


    here = Path(chapter_dir or os.getcwd()).resolve()
    root = book_root(here)
    rel = here.relative_to(root) if root is not None else Path(".")
    out = output_dir() / "executed" / rel / TABLE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    rows = list(rows)
    tmp.write_text("<h3>Headline claims (Holm-adjusted per model)</h3>\n" + grid_styled(rows).to_html()
                   + "\n<h3>Every claim</h3>\n" + reason_rows_html(rows))
    os.replace(tmp, out)
    return out
