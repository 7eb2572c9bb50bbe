"""The scorecard is built from the chapters' results JSON: every claim, exactly the chapters' rows.

The notebook (`kq run 99`) and the chapter module's surface are tested in tests/chapters/test_ch99_scorecard.py."""

from __future__ import annotations

import json

from kqlib.book.claims import scorecard as S
from kqlib.book.claims import verdicts as V
from scorecard_results import fake_results


def test_collect_has_every_claim_and_exactly_the_chapters_rows(tmp_path):
    written = fake_results(tmp_path)
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
    fake_results(tmp_path)
    rows = S.collect(tmp_path)
    html = S.table(rows).to_html()
    for verdict in {r["verdict"] for r in rows}:
        assert V.COLOURS[verdict] in html
    assert 'href="01_kl_reexamination.html#paper-vs-this-run"' in html
    assert len(S.frame(rows)) == len(rows)


def test_headline_grid_forest_and_reason_rows(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fake_results(tmp_path)
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
