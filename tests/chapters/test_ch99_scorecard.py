"""Chapter 99 (the scorecard): what the notebook calls through its module (``K.collect``, ``K.results_dir``,
``K.counts``, ``K.headline_rows``, ``K.grid_styled``, ``K.forest_figure``, ``K.table``, ``K.write_table``) on
results files written in the chapters' shape, whose Holm adjustment is known by hand; and the notebook executed
by `kq run 99`. The library's own checks of collect / frame / grid are in tests/book/test_scorecard.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

from kqlib.book.chapters import ch99_scorecard as K
from kqlib.book.claims import verdicts as V
from scorecard_results import fake_results, write_results

matplotlib.use("Agg")

NAME = "99_scorecard"


def _rows(results: Path) -> list[dict]:
    """Primary rows with known p: model m1 has three testable primary claims judged "holds" by their chapters,
    with p 0.03, 0.001 and 0.04. Holm over m = 3: 0.001·3 = 0.003, 0.03·2 = 0.06, max(0.06, 0.04·1) = 0.06, so
    only model_order still holds. m2's one primary row is a family of one: p 0.03 stays "holds"."""
    rows01 = [V.claim_row("ki_majority_chance", "m1", 0.0, p=0.03, n=20),  # headline 1, null 0.05, "less"
              V.claim_row("ki_majority_chance", "m2", 0.0, p=0.03, n=20),
              V.claim_row("welch_separation", "m1", 0.2, p=1e-9, n=20),  # headline 3, not testable: no family
              V.claim_row("edit_gen_gap", "m1", 0.1, 0.02, 0.18, 20, p=0.04),  # headline 5, null 0, "greater"
              V.claim_row("ki_majority", "m1", 0.8, 0.6, 0.9, 20, interval="wilson")]  # secondary
    rows02 = [V.claim_row("model_order", "m1", -0.1, p=0.001, n=20)]  # headline 2, null 0, "less"
    write_results(results, "01_kl_reexamination", rows01, profile="cpu", finished_at="2024-05-01T10:00:00")
    write_results(results, "02_consistency_violins", rows02, profile="smoke", finished_at="2024-05-02T10:00:00")
    for r in rows01[:2] + rows01[3:] + rows02:
        assert r["verdict"] == V.HOLDS, r  # what the chapters judged, before the adjustment
    return rows01 + rows02


@pytest.fixture()
def rows(tmp_path, monkeypatch):
    monkeypatch.setenv("KQ_BUILD_DIR", str(tmp_path / "_build"))
    _rows(tmp_path / "_build" / "results")
    return K.collect(K.results_dir())  # as the notebook reads them


def test_collect_reads_the_build_dirs_results_with_each_chapters_run(rows, tmp_path):
    assert K.results_dir() == tmp_path / "_build" / "results"
    order = [c.id for c in V.claims()]
    assert sorted(rows, key=lambda r: order.index(r["claim"])) == rows  # claims.toml order, stable within a claim
    assert [r["model"] for r in rows if r["claim"] == "ki_majority_chance"] == ["m1", "m2"]
    by = {(r["claim"], r["model"]): r for r in rows}
    assert by["edit_gen_gap", "m1"]["profile"] == "cpu" and by["model_order", "m1"]["profile"] == "smoke"
    assert by["model_order", "m1"]["run_finished_at"] == "2024-05-02T10:00:00"
    # chapter 02 ran but wrote no cs_below_threshold row; chapter 03 did not run
    cs = by["cs_below_threshold", "–"]
    assert cs["profile"] == "smoke" and "no row" in cs["reason"]
    assert by["mapping_own_vs_intersection", "–"]["profile"] is None


def test_counts_list_every_verdict_of_the_chapters_rows(rows):
    hand = [{"verdict": v} for v in (V.HOLDS, V.HOLDS, V.DIFFERS, V.NOT_MEASURABLE)]
    out = K.counts(hand)
    assert out == {V.HOLDS: 2, V.DIFFERS: 1, V.INCONCLUSIVE: 0, V.NOT_MEASURABLE: 1} and list(out) == list(V.VERDICTS)
    assert K.counts([]) == dict.fromkeys(V.VERDICTS, 0)
    c = K.counts(rows)  # the chapters' verdicts, not the Holm-adjusted ones: 5 rows hold
    assert c[V.HOLDS] == 5 and c[V.DIFFERS] == 0 and sum(c.values()) == len(rows)
    # the notebook glues n_<first word>: one distinct name per verdict
    assert len({f"n_{k.split()[0]}" for k in c}) == len(V.VERDICTS)


def test_headline_rows_holm_adjust_each_models_primary_family(rows):
    head = K.headline_rows(rows)
    assert all(r["role"] == "primary" for r in head) and "ki_majority" not in {r["claim"] for r in head}
    assert [(r["headline"], r["model"]) for r in head] == [
        (1, "m1"), (1, "m2"), (2, "m1"), (3, "m1"), (4, "–"), (5, "m1"), (6, "–"), (7, "–"), (8, "–"),
        (9, "–")]  # by headline, then model; the chapters not run give one "–" row
    by = {(r["claim"], r["model"]): r for r in head}
    assert by["model_order", "m1"]["verdict"] == V.HOLDS
    assert by["model_order", "m1"]["p_holm"] == pytest.approx(0.003) and by["model_order", "m1"]["family"] == 3
    for key in (("ki_majority_chance", "m1"), ("edit_gen_gap", "m1")):
        r = by[key]
        assert r["p_holm"] == pytest.approx(0.06) and r["verdict"] == V.INCONCLUSIVE
        assert r["verdict_unadjusted"] == V.HOLDS and "holds before adjustment" in r["reason"]
    m2 = by["ki_majority_chance", "m2"]
    assert m2["verdict"] == V.HOLDS and m2["p_holm"] == pytest.approx(0.03) and m2["family"] == 1
    welch = by["welch_separation", "m1"]  # not testable: in headline_rows, outside the family of 3
    assert welch["verdict"] == V.NOT_MEASURABLE and welch["p_holm"] is None


def _shaded_cells(html: str) -> dict[tuple[int, int], str]:
    """(row, col) -> background colour, from the Styler's CSS (identical rules share one selector list)."""
    out = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", html.split("</style>")[0]):
        colour = re.search(r"background-color:\s*(#\w+)", body)
        for row, col in re.findall(r"_row(\d+)_col(\d+)", selectors):
            if colour:
                out[int(row), int(col)] = colour.group(1)
    return out


def test_grid_styled_shows_the_adjusted_verdict_per_claim_and_model(rows):
    styled = K.grid_styled(rows)
    g = styled.data
    assert list(g.columns) == ["m1", "m2"] and len(g) == 9 and g.index.name == "headline claim"
    line = {int(i.split(".")[0]): g.loc[i] for i in g.index}
    assert list(line[1]) == [V.INCONCLUSIVE, V.HOLDS]  # m1 after Holm; m2 alone
    assert list(line[2]) == [V.HOLDS, "–"] and list(line[5]) == [V.INCONCLUSIVE, "–"]
    assert list(line[6]) == [V.NOT_MEASURABLE] * 2  # a chapter not run: not measurable for every model
    shaded = _shaded_cells(styled.to_html())
    for i, name in enumerate(g.index):
        for j, col in enumerate(g.columns):
            value = g.loc[name, col]
            assert shaded.get((i, j)) == V.COLOURS.get(value), (name, col, value)  # "–": no colour


def test_forest_figure_draws_each_estimate_against_its_null(rows):
    import matplotlib.pyplot as plt

    fig = K.forest_figure(rows)
    try:
        ax = fig.axes[0]
        head = [r for r in K.headline_rows(rows) if r["estimate"] is not None]
        assert len(head) == 5  # the rows of chapters not run have no estimate
        labels = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
        assert [labels[y] for y in sorted(labels, reverse=True)] == \
            [f"{r['headline']}. {r['claim']} ({r['model']})" for r in head]  # headline order from the top
        points = {}
        for c in ax.containers:  # one errorbar per row: the point, and its interval as a segment
            line, _, bars = c.lines
            seg = bars[0].get_segments()[0]
            points[round(float(line.get_ydata()[0]))] = (float(line.get_xdata()[0]), seg[0][0], seg[1][0],
                                                         matplotlib.colors.to_hex(line.get_color()))
        by_label = {labels[y]: v for y, v in points.items()}
        # edit_gen_gap: 0.1 [0.02, 0.18] against null 0, inconclusive after Holm (grey)
        x, lo, hi, colour = by_label["5. edit_gen_gap (m1)"]
        assert (x, lo, hi) == pytest.approx((0.1, 0.02, 0.18)) and colour == "#6c757d"
        # ki_majority_chance: 0.0 against null 0.05 -> -0.05, no interval; m2 still holds (green)
        x, lo, hi, colour = by_label["1. ki_majority_chance (m2)"]
        assert (x, lo, hi) == pytest.approx((-0.05, -0.05, -0.05)) and colour == "#1e7e34"
        assert by_label["2. model_order (m1)"][0] == pytest.approx(-0.1)
        # the paper's effect for ki_majority_chance (0.0, i.e. -0.05 from the null): a diamond on both its rows
        diamonds = [ln for ln in ax.lines if ln.get_marker() == "D"]
        assert sorted(labels[round(float(d.get_ydata()[0]))] for d in diamonds) == \
            ["1. ki_majority_chance (m1)", "1. ki_majority_chance (m2)"]
        assert all(float(d.get_xdata()[0]) == pytest.approx(-0.05) for d in diamonds)
    finally:
        plt.close(fig)


def test_table_names_each_primary_rows_holm_p_and_keeps_the_chapters_verdict(rows):
    df = K.table(rows).data
    assert len(df) == len(rows)
    role = dict(zip(zip(df["claim"], df["model"]), df["role"]))
    text = {c.id: c.text for c in V.claims()}
    assert role[text["ki_majority_chance"], "m1"] == "primary (Holm p = 0.06 of 3: inconclusive)"
    assert role[text["model_order"], "m1"] == "primary (Holm p = 0.003 of 3)"
    assert role[text["ki_majority_chance"], "m2"] == "primary (Holm p = 0.03 of 1)"
    assert role[text["ki_majority"], "m1"] == "secondary"
    verdict = dict(zip(zip(df["claim"], df["model"]), df["verdict"]))
    assert verdict[text["ki_majority_chance"], "m1"] == V.HOLDS  # the chapter's; the adjustment is in the role


def test_write_table_puts_the_grid_and_every_claim_beside_the_executed_chapter(rows, tmp_path, monkeypatch):
    book = tmp_path / "bookroot"
    (book / "book").mkdir(parents=True)
    (book / "_toc.yml").write_text("format: jb-book\n")
    monkeypatch.setenv("KQ_OUTPUT_DIR", str(tmp_path / "staged"))
    path = K.write_table(rows, book / "book")
    assert path == tmp_path / "staged" / "executed" / "book" / "scorecard_table.html"
    assert [p.name for p in path.parent.iterdir()] == ["scorecard_table.html"]  # no temporary file left
    grid, every = path.read_text().split("<h3>Every claim</h3>")
    assert grid.startswith("<h3>Headline claims (Holm-adjusted per model)</h3>")
    assert all(f"{n}. " in grid for n in range(1, 10))
    assert every.count('<tr class="reason">') == sum(bool(r["reason"]) for r in rows)
    assert all(r["text"] in every for r in rows)
    # a second write replaces the file: the page shows this run only
    K.write_table(rows[:1], book / "book")
    assert path.read_text().split("<h3>Every claim</h3>")[1].count("<tr>") == 1 + 1  # the header and one row


@pytest.mark.book
def test_scorecard_notebook_equals_the_results(tmp_path):
    """The last notebook, executed by `kq run 99`, records and glues exactly what collect() reads."""
    from test_book import REPO, _book

    root = _book(tmp_path, {f"{NAME}.py": (REPO / "book" / f"{NAME}.py").read_text()})
    fake_results(root / "_build" / "results")
    kq = Path(sys.executable).with_name("kq")
    proc = subprocess.run([str(kq), "run", "99", "--profile", "smoke", "--root", str(root)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((root / "_build" / "results" / f"{NAME}.json").read_text())
    expected = K.collect(root / "_build" / "results")
    got = data["numbers"]["scorecard"]
    assert [(r["claim"], r["model"], r["verdict"], r["this_run"]) for r in got] == \
        [(r["claim"], r["model"], r["verdict"], r["this_run"]) for r in expected if r["chapter"] != NAME]
    assert data["numbers"]["n_rows"] == len(got)
    assert data["numbers"]["n_holds"] == sum(r["verdict"] == V.HOLDS for r in got)
    import nbformat

    nb = nbformat.read(root / "_build" / "executed" / "book" / f"{NAME}.ipynb", as_version=4)
    glued = [o for c in nb.cells for o in c.get("outputs", [])
             if o.get("metadata", {}).get("scrapbook", {}).get("name") == "scorecard_table"]
    assert len(glued) == 1
    html = next(v for k, v in glued[0]["data"].items() if k.endswith("text/html"))
    for r in got:
        assert r["text"] in html and r["verdict"] in html
    # the file the front page includes is the same table
    from kqlib.book.claims.scorecard import TABLE_FILE

    page = (root / "_build" / "executed" / "book" / TABLE_FILE).read_text()
    assert all(r["this_run"] in page and r["text"] in page for r in got)
    every = page.split("<h3>Every claim</h3>")[1]  # the headline grid comes first
    assert every.count("<tr") == len(got) + 1 + sum(bool(r["reason"]) for r in got)  # reasons in rows under
