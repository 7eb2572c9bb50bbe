"""Damage says what it is: a damaged or wrongly shaped results file, timings file or claims.toml entry is named
(file, claim, field) with what to do; never a bare traceback, never a chapter "not run"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kqlib.book.claims import scorecard
from kqlib.book.claims import verdicts as V
from kqlib.book.run.progress import Timings
from kqlib.errors import DataError, ParameterError

REPO = Path(__file__).resolve().parents[2]
GOOD = {"chapter": "04_dynamic_kn_selection", "numbers": {"claims": []}, "run": {"profile": "smoke"}}


@pytest.mark.parametrize("text,problem", [
    (json.dumps(GOOD)[:40], "not valid JSON"), ("[1, 2]", "holds a list"), ('{"chapter": "x"}', "lacks"),
    ('{"numbers": {"claims": 3}, "run": {}}', "not a list")])
def test_a_damaged_results_file_is_named_not_called_not_run(tmp_path, text, problem):
    results = tmp_path / "results"
    results.mkdir()
    (results / "04_dynamic_kn_selection.json").write_text(text)
    with pytest.raises(DataError) as err:
        scorecard.collect(results)
    msg = str(err.value)
    assert "04_dynamic_kn_selection.json" in msg and problem in msg and "kq run 04" in msg


def test_the_explorer_names_a_damaged_results_file(tmp_path):
    from kqlib.book.site.explorer import _results

    (tmp_path / "results").mkdir()
    assert _results(tmp_path, "01_x") == {}  # not run: nothing to show
    (tmp_path / "results" / "01_x.json").write_text('["wrong shape"]')
    with pytest.raises(DataError, match="01_x.json holds a list"):
        _results(tmp_path, "01_x")


@pytest.fixture
def claims_file(tmp_path, monkeypatch):
    path = tmp_path / "claims.toml"
    path.write_text((REPO / "kqlib" / "book" / "claims" / "claims.toml").read_text())
    monkeypatch.setattr(V, "CLAIMS_FILE", path)
    V._load.cache_clear()
    yield path
    V._load.cache_clear()


def test_claims_load_when_valid(claims_file):
    assert len(V.claims()) == (REPO / "kqlib" / "book" / "claims" / "claims.toml").read_text().count("\n[[claim]]")


@pytest.mark.parametrize("old,new,expect", [
    ('chapter = "04_dynamic_kn_selection"', 'chapter = "04_dynamic_kn_selectoin"', "field 'chapter'"),
    ('quantity = ', 'quantityy = ', "field 'quantity' is missing"),
    ('null = 0.5', 'null = "half"', "field 'null'"),
    ('format = "pct"', 'format = "percent"', "field 'format'")])
def test_a_bad_claim_names_file_claim_and_field(claims_file, old, new, expect):
    text = claims_file.read_text()
    assert old in text
    claims_file.write_text(text.replace(old, new, 1))
    with pytest.raises(ParameterError) as err:
        V.claims()
    msg = str(err.value)
    assert str(claims_file) in msg and "claim '" in msg and expect in msg


@pytest.mark.parametrize("content", ['{"smoke": [1, 2]}', '["x"]', '{"smoke": {"book/00_setup.py": "fast"}}', "{tr"])
def test_a_damaged_timings_file_is_named_and_ignored(tmp_path, capsys, content):
    path = tmp_path / "_build" / "timings.json"
    path.parent.mkdir()
    path.write_text(content)
    t = Timings(tmp_path, "smoke", measured=tmp_path / "none.json")
    assert t.eta(["book/00_setup.py"]) is None
    t.record("book/00_setup.py", 3.0)
    assert json.loads(path.read_text()) == {"smoke": {"book/00_setup.py": 3.0}}
    assert "timings.json was damaged" in capsys.readouterr().err
