"""Every chapter 01–06 with a model that knows 0, 1, 2 or 3 facts (tests/helpers/few_facts.py runs the chapter's own
source on tiny models with a replaced scan): 0 facts is a clear stop (TooFewFacts: the scan and what to do),
1 and 2 facts run to the end with every figure panel drawn or labelled, every claim judged with a reason when
not measured; with two models, the one that knows nothing is left out and the other goes on."""

from __future__ import annotations

import json

import pytest

from few_facts import run_chapter
from kqlib.errors import TooFewFacts

CHAPTERS = ["01_kl_reexamination", "02_consistency_violins", "03_query_kn_mapping", "04_dynamic_kn_selection",
            "05_cas_editing", "06_path_points"]
FAST = dict(steps=2, n_boot=50)


@pytest.fixture()
def saved_figures(monkeypatch):
    """Every figure a chapter saves (kqlib.book.figures.save), kept open for inspection."""
    from kqlib.book import figures

    saved, real = [], figures.save
    monkeypatch.setattr(figures, "save", lambda fig, name: saved.append((name, fig)) or real(fig, name))
    yield saved
    import matplotlib.pyplot as plt

    plt.close("all")


def _results(tmp_path, name):
    return json.loads((tmp_path / "_build" / "results" / f"{name}.json").read_text())


def _check_page(tmp_path, name, saved):
    assert saved, "no figure saved"
    for fig_name, fig in saved:
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert ax.lines or ax.collections or ax.images or ax.patches or ax.texts, (fig_name, ax.get_title())
    if name == "06_path_points":  # no claims: a glued page
        return
    claims = _results(tmp_path, name)["numbers"]["claims"]
    assert claims
    for row in claims:
        assert row["verdict"] in ("inconclusive", "not measurable here", "holds", "differs"), row
        if row["verdict"] in ("inconclusive", "not measurable here"):
            assert row["reason"], row  # always says why


@pytest.mark.parametrize("name", CHAPTERS)
def test_no_fact_is_a_clear_stop(name, monkeypatch, tmp_path):
    with pytest.raises(TooFewFacts) as info:
        run_chapter(name, 0, monkeypatch, tmp_path, **FAST)
    msg = str(info.value)
    assert "'tiny-a' keeps 0 ParaRel fact(s)" in msg and f"chapter {name} needs at least 1" in msg
    assert "P36: 2 of 2 facts scanned, 0 kept" in msg and "kq data --model tiny-a" in msg
    assert not (tmp_path / "_build" / "results" / f"{name}.json").exists()


@pytest.mark.parametrize("name", CHAPTERS)
@pytest.mark.parametrize("n_facts", [1, 2, 3])
def test_few_facts_run_to_the_end(name, n_facts, monkeypatch, tmp_path, saved_figures):
    ns = run_chapter(name, n_facts, monkeypatch, tmp_path, **FAST)
    _check_page(tmp_path, name, saved_figures)
    if name != "06_path_points":
        claims = _results(tmp_path, name)["numbers"]["claims"]
        if n_facts == 1:  # one fact: nothing can be decided
            assert {r["verdict"] for r in claims} <= {"not measurable here", "inconclusive"}
    assert ns["__shown__"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_an_ignorant_model_is_left_out_and_the_other_goes_on(name, monkeypatch, tmp_path, saved_figures):
    with pytest.warns(UserWarning, match="left out model 'weak'"):
        ns = run_chapter(name, {"weak": 0, "good": 2}, monkeypatch, tmp_path, models=("weak", "good"), **FAST)
    assert [lm.name for lm in ns["lms"]] == ["good"]
    _check_page(tmp_path, name, saved_figures)
    if name != "06_path_points":
        res = _results(tmp_path, name)
        assert list(res["numbers"]["models_left_out"]) == ["weak"]
        assert res["run"]["parameters"]["models"] == ["weak", "good"]  # the record keeps what was asked
        assert ns["models"] == ["good"]
        assert {r["model"] for r in res["numbers"]["claims"]} <= {"good", "all"}


def test_empty_table_says_why():
    import pandas as pd

    from kqlib.book import report

    empty = pd.DataFrame(columns=["model", "gain"])
    assert "Empty table" in report.table_html(empty) and "kq data --model" in report.table_html(empty)
    assert "Empty table" in report.table_html(empty.style)
    full = pd.DataFrame({"model": ["m"], "gain": [0.5]})
    assert "Empty table" not in report.table_html(full) and "0.5" in report.table_html(full.style)


def test_empty_panel_is_labelled():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kqlib.book.figures import mark_empty

    fig, (a, b) = plt.subplots(1, 2)
    a.plot([0, 1], [1, 2])
    assert mark_empty(fig) == 1 and not a.texts and "nothing to show" in b.texts[0].get_text()
    plt.close(fig)


STOP_CHAPTER = '''\
# %% [markdown]
# # A model that knows nothing

# %% tags=["parameters"]
profile = "smoke"

# %%
from kqlib.paper import scans
from kqlib.paper.pararel import Dataset

empty = Dataset([], {"min_correct": 2}, {"P36": dict(facts=471, scanned=471, kept=0, dropped_not_answered=471)})
scans.require_facts({"/models/weak": empty}, 1, "chapter 09_stop")
'''


@pytest.mark.book
def test_kq_run_turns_the_stop_into_exit_2_without_traceback(tmp_path):
    """The chapter's TooFewFacts reaches the terminal as kqlib's message (exit 2): no traceback, no partial
    notebook left behind."""
    import subprocess
    import sys

    from test_book import _book
    from test_runner import _env

    root = _book(tmp_path, {"09_stop.py": STOP_CHAPTER})
    proc = subprocess.run([sys.executable, "-m", "kqlib.cli", "run", "09", "--profile", "smoke", "--root", str(root)],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    err = proc.stderr
    assert "chapter book/09_stop.py stopped: Model '/models/weak' keeps 0 ParaRel fact(s)" in err
    assert "P36: 471 of 471 facts scanned, 0 kept" in err and "kq data --model /models/weak" in err
    assert "Traceback" not in err + proc.stdout and "\x1b[" not in err
    assert not list((root / "_build").rglob("09_stop.ipynb"))


@pytest.mark.parametrize("name", ["01_kl_reexamination", "04_dynamic_kn_selection"])
def test_facts_without_any_knowledge_neuron_are_a_clear_stop(name, monkeypatch, tmp_path):
    """t = 1 keeps no neuron (score > 1 · max): facts but nothing to measure."""
    with pytest.raises(TooFewFacts, match="none of its 4 queries has a knowledge neuron .*t_threshold=1.0"):
        run_chapter(name, 2, monkeypatch, tmp_path, t_threshold=1.0, **FAST)
