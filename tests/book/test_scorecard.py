"""The scorecard is built from the chapters' results JSON: every claim, exactly the chapters' rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kqlib.book.claims import scorecard as S
from kqlib.book.claims import verdicts as V


def _write(results: Path, chapter: str, rows: list[dict], profile: str = "smoke") -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{chapter}.json").write_text(json.dumps(
        {"chapter": chapter, "numbers": {"claims": rows}, "run": {"profile": profile, "finished_at": "now"}}))


def _fake_results(results: Path) -> list[dict]:
    rows01 = [V.claim_row("ki_majority", "m1", 0.8, 0.6, 0.9, 20, interval="wilson"),
              V.claim_row("ki_majority", "m2", 0.3, 0.1, 0.45, 20, interval="wilson"),
              V.claim_row("welch_separation", "m1", 0.2, p=1e-9, n=20)]
    rows05 = [V.claim_row(c.id, "m1", 0.01, -0.02, 0.04, 12) for c in V.claims("05")]
    _write(results, "01_kl_reexamination", rows01)
    _write(results, "05_cas_editing", rows05)
    return rows01 + rows05


def test_collect_has_every_claim_and_exactly_the_chapters_rows(tmp_path):
    written = _fake_results(tmp_path)
    rows = S.collect(tmp_path)
    assert {r["claim"] for r in rows} == {c.id for c in V.claims()}
    from_json = [r for r in rows if r["chapter"] in ("01_kl_reexamination", "05_cas_editing")
                 and r["model"] != "–"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("profile", "run_finished_at")}  # noqa: E731
    assert sorted(map(json.dumps, map(strip, from_json))) == sorted(map(json.dumps, written))
    # both models of the ki_majority claim, with the verdicts judged by the chapter
    ki = [r for r in rows if r["claim"] == "ki_majority"]
    assert [(r["model"], r["verdict"]) for r in ki] == [("m1", V.HOLDS), ("m2", V.DIFFERS)]
    # chapters that did not run: one row each, not measurable, saying why
    missing = [r for r in rows if r["chapter"] == "03_query_kn_mapping"]
    assert missing and all(r["verdict"] == V.NOT_MEASURABLE and "not been run" in r["reason"] for r in missing)
    # a chapter that ran but wrote no row for one of its claims
    edit = [r for r in rows if r["claim"] == "edit_gen_gap"]
    assert len(edit) == 1 and "no row" in edit[0]["reason"]
    assert sum(S.counts(rows).values()) == len(rows)


def test_scorecard_table_colours_and_links(tmp_path):
    _fake_results(tmp_path)
    rows = S.collect(tmp_path)
    html = S.table(rows).to_html()
    for verdict in {r["verdict"] for r in rows}:
        assert V.COLOURS[verdict] in html
    assert 'href="01_kl_reexamination.html#paper-vs-this-run"' in html
    assert len(S.frame(rows)) == len(rows)


@pytest.mark.book
def test_scorecard_notebook_equals_the_results(tmp_path):
    """The last notebook, executed by `kq run 99`, records and glues exactly what collect() reads."""
    from test_book import REPO, _book

    root = _book(tmp_path, {"99_scorecard.py": (REPO / "book" / "99_scorecard.py").read_text()})
    _fake_results(root / "_build" / "results")
    kq = Path(sys.executable).with_name("kq")
    proc = subprocess.run([str(kq), "run", "99", "--profile", "smoke", "--root", str(root)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((root / "_build" / "results" / "99_scorecard.json").read_text())
    expected = S.collect(root / "_build" / "results")
    got = data["numbers"]["scorecard"]
    assert [(r["claim"], r["model"], r["verdict"], r["this_run"]) for r in got] == \
        [(r["claim"], r["model"], r["verdict"], r["this_run"]) for r in expected if r["chapter"] != "99_scorecard"]
    assert data["numbers"]["n_rows"] == len(got)
    assert data["numbers"]["n_holds"] == sum(r["verdict"] == V.HOLDS for r in got)
    import nbformat

    nb = nbformat.read(root / "_build" / "executed" / "book" / "99_scorecard.ipynb", as_version=4)
    glued = [o for c in nb.cells for o in c.get("outputs", [])
             if o.get("metadata", {}).get("scrapbook", {}).get("name") == "scorecard_table"]
    assert len(glued) == 1
    html = next(v for k, v in glued[0]["data"].items() if k.endswith("text/html"))
    for r in got:
        assert r["text"] in html and r["verdict"] in html
    # the file the front page includes is the same table
    page = (root / "_build" / "executed" / "book" / S.TABLE_FILE).read_text()
    assert all(r["this_run"] in page and r["text"] in page for r in got)
    every = page.split("<h3>Every claim</h3>")[1]  # the headline grid comes first
    assert every.count("<tr") == len(got) + 1 + sum(bool(r["reason"]) for r in got)  # reasons in rows under


def test_headline_grid_forest_and_reason_rows(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _fake_results(tmp_path)
    rows = S.collect(tmp_path)
    head = S.headline_rows(rows)
    assert {r["headline"] for r in head} == set(range(1, 10)) and all(r["role"] == "primary" for r in head)
    g = S.grid(rows)
    assert len(g) == 9 and set(g.values.ravel()) <= set(V.VERDICTS) | {"–"}
    # the 05 rows of the fake run hold nothing: their primary row (cas_vs_ni) is inconclusive for m1
    assert g.loc[[i for i in g.index if i.startswith("8.")][0], "m1"] == V.INCONCLUSIVE
    fig = S.forest_figure(rows)
    assert len(fig.axes[0].get_yticklabels()) == sum(r.get("estimate") is not None for r in head)
    html = S.reason_rows_html(rows)
    assert html.count('class="reason"') == sum(bool(r["reason"]) for r in rows)
