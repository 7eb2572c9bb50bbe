"""kqlib.runs.progress: the one progress primitive (lines, rate, ETA, the runner's channel) and who reports through it."""

from __future__ import annotations

import io
import json

import pytest

from kqlib.runs import progress as P
from kqlib.runs.progress import Progress, fmt_duration


def test_fmt_duration():
    assert fmt_duration(None) == "unknown" and fmt_duration(float("inf")) == "unknown"
    assert fmt_duration(float("nan")) == "unknown"
    assert fmt_duration(0) == "0:00" and fmt_duration(59.6) == "1:00" and fmt_duration(61) == "1:01"
    assert fmt_duration(3600 + 62) == "1:01:02"


def test_lines_rate_and_eta_from_measured_items(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(P.time, "time", lambda: clock[0])
    out = io.StringIO()
    bar = Progress(10, "ig attribution", "query", every=0, eta_after=2, rate="per_item", stream=out, channel=False)
    for _ in range(4):
        clock[0] += 3.0  # 3 s per query
        bar.step()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[kqlib] ig attribution: 10 queries to do"
    assert "1/10" in lines[1] and "ETA unknown" in lines[1]  # one item is not enough to estimate
    assert "2/10" in lines[2] and "3.00 s/query" in lines[2] and "ETA 0:24" in lines[2]  # 8 left x 3 s
    assert "4/10" in lines[4] and "elapsed 0:12" in lines[4] and "ETA 0:18" in lines[4]
    assert bar.eta == pytest.approx(18.0)


def test_throttled_but_first_and_last_always_shown(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(P.time, "time", lambda: clock[0])
    out = io.StringIO()
    bar = Progress(50, "edits", "edit", every=10.0, stream=out, channel=False)
    for _ in range(50):
        clock[0] += 0.1
        bar.step()
    steps = [ln for ln in out.getvalue().splitlines() if "/50" in ln]
    assert steps[0].split(": ")[1].startswith("1/50") and steps[-1].split(": ")[1].startswith("50/50")
    assert len(steps) == 2


def test_disabled_prints_nothing(capsys):
    bar = Progress(3, "quiet", enabled=False, channel=False)
    bar.step(3)
    bar.close()
    assert capsys.readouterr().err == ""


def test_channel_gets_json_lines_and_the_stream_nothing(tmp_path, monkeypatch, capsys):
    """Inside a chapter run by the book runner, updates go to the runner's file, never to the cell output."""
    channel = tmp_path / "progress.jsonl"
    monkeypatch.setenv(P.CHANNEL_ENV, str(channel))
    bar = Progress(3, "ParaRel scan", "fact", every=0, enabled=True)
    for _ in range(3):
        bar.step()
    bar.close()
    assert capsys.readouterr().err == ""
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "step", "step", "step", "close"]
    assert records[-2]["done"] == records[-2]["total"] == 3 and records[-2]["eta"] == 0.0
    assert all(r["desc"] == "ParaRel scan" for r in records)


def test_pararel_scan_reports_through_the_primitive(tmp_path, monkeypatch):
    from test_pararel import _write_jsonl  # the ParaRel tests' fixture layout
    from tiny import tiny_lm

    from kqlib.paper import pararel

    root = tmp_path / "pararel"
    _write_jsonl(root / "patterns" / "P103.jsonl", [{"pattern": "the native language of [X] is [Y] ."},
                                                    {"pattern": "the mother tongue of [X] is [Y]."}])
    _write_jsonl(root / "tuples" / "P103.jsonl", [{"sub_label": s, "obj_label": o, "uuid": s} for s, o in
                                                  [("paris", "french"), ("berlin", "german"), ("rome", "italian")]])
    channel = tmp_path / "progress.jsonl"
    monkeypatch.setenv(P.CHANNEL_ENV, str(channel))
    ds = pararel.build_dataset(tiny_lm("llama"), ["P103"], n_per_relation=2, top_k=10**6, root=root, progress=False)
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    scan = [r for r in records if r["desc"].startswith("ParaRel scan")]
    assert scan and scan[0]["total"] == 2
    assert max(r["done"] for r in scan) == 2 == len(ds)


def test_editing_loop_reports_edits(tmp_path, monkeypatch):
    from test_kl_editing import OBJECTS, TEXTS, _dataset, _kn_sets
    from tiny import tiny_lm

    from kqlib.paper.kl_editing import run_single_query_edits

    channel = tmp_path / "progress.jsonl"
    monkeypatch.setenv(P.CHANNEL_ENV, str(channel))
    lm = tiny_lm("llama")
    df = run_single_query_edits(lm, _dataset(lm), _kn_sets(), objects=OBJECTS, n_unrelated=2, ppl_texts=TEXTS)
    records = [json.loads(line) for line in channel.read_text().splitlines()]
    edits = [r for r in records if r["desc"].startswith("KN editing") and r["event"] == "step"]
    assert edits and edits[-1]["done"] == edits[-1]["total"] >= len(df) > 0


def test_runner_prints_chapter_updates_with_the_run_eta(tmp_path, capsys):
    from kqlib.book.run.runner import RunnerProgress, Timings

    timings = Timings(tmp_path, "smoke")
    timings.record("book/01.py", 100.0)
    timings.record("book/02.py", 50.0)
    timings = Timings(tmp_path, "smoke")
    runner = RunnerProgress(timings, ["book/01.py", "book/02.py"], "kq book")
    runner.start(0)
    update = dict(event="step", desc="m ig", total=4, done=2, text="2/4  1.00 s/query  elapsed 0:02  ETA 0:02")
    runner.update(update)
    cached = dict(event="start", desc="m sig", total=0, done=0, text="0 queries to do, 4 from cache")
    runner.update(cached)
    runner.update(cached)  # said once per chapter
    runner.update(dict(update, event="close", text=None))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("[kq book] 1/2 book/01.py | m ig: 2/4") and "run ETA 2:" in lines[1]  # ~100 + 50 - 0
    assert sum("m sig" in ln for ln in lines) == 1 and len(lines) == 3
    skip = RunnerProgress(timings, ["book/01.py", "book/02.py"], "kq book", skip={"book/02.py"})
    assert skip.run_eta(0) == pytest.approx(100.0, abs=2.0)  # the skipped chapter is not in the run's ETA


def test_a_fresh_build_takes_its_eta_from_the_shipped_measurement(tmp_path):
    """No _build/timings.json yet (a fresh clone): the cpu profile's ETA comes from measured_timings.json; a
    step this build has timed overrides it; a missing or broken measurement file leaves the ETA unknown."""
    from kqlib.book.run.progress import MEASURED, Timings

    shipped = json.loads(MEASURED.read_text())["cpu"]
    steps = [s for s in shipped if s != "html"]
    fresh = Timings(tmp_path, "cpu")
    assert fresh.eta(steps) == pytest.approx(sum(shipped[s] for s in steps))
    fresh.record(steps[0], 1.0)
    again = Timings(tmp_path, "cpu")
    assert again.eta(steps[:1]) == pytest.approx(1.0)
    broken = tmp_path / "broken.json"
    broken.write_text("[not an object")
    assert Timings(tmp_path / "other", "cpu", measured=broken).eta(steps) is None
    assert Timings(tmp_path / "other", "smoke").eta(["book/01_kl_reexamination.py"]) is None


def test_a_step_never_timed_gives_a_lower_bound_not_unknown(tmp_path):
    """A chapter added after the shipped measurement: the run's ETA is the timed steps' sum, said as a bound."""
    from kqlib.book.run.progress import Timings

    measured = tmp_path / "measured.json"
    measured.write_text(json.dumps({"cpu": {"a.py": 60.0, "b.py": 120.0}}))
    t = Timings(tmp_path, "cpu", measured=measured)
    assert t.eta_text(["a.py", "b.py"]) == "3:00"
    assert t.eta_text(["a.py", "new.py", "b.py"]) == ">= 3:00 (+ 1 step(s) never timed)"
    assert t.eta_text(["a.py", "b.py"], spent=30.0) == "2:30"  # the running step's spent time counts
    assert t.eta_text(["a.py"], spent=90.0) == "0:00"  # never negative
    assert t.eta_text(["new.py"]) == "unknown"
