"""Thread-count choice: free cores from CPU-time samples, user values validated."""

import pytest

from kqlib.core import threads
from kqlib.errors import ParameterError


def test_free_cores_counts_busy_time(monkeypatch):
    samples = iter([(100, 200), (100, 300)])  # idle did not move while total grew: every core busy
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    assert threads.free_cores(interval=0) == 1  # never below one
    samples = iter([(100, 200), (150, 300)])  # half the time idle on 2 cores: one busy core
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.free_cores(interval=0) == 1
    samples = iter([(100, 200), (200, 300)])  # all idle
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.free_cores(interval=0) == 2


def test_niced_work_counts_as_free(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # cpu  user nice system idle iowait irq softirq steal
    stat.write_text("cpu  100 0 0 100 0 0 0 0\n")
    assert threads._cpu_times(str(stat)) == (100, 200)
    stat.write_text("cpu  0 150 0 50 0 0 0 0\n")  # a niced job: its time yields to us
    assert threads._cpu_times(str(stat)) == (200, 200)
    samples = iter([threads._cpu_times(str(stat)), (400, 400)])  # only niced work in between: all cores free
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    assert threads.free_cores(interval=0) == 2


def test_parse_threads():
    assert threads.parse_threads(None) is None and threads.parse_threads("") is None
    assert threads.parse_threads("3") == 3 and threads.parse_threads(2) == 2
    assert 1 <= threads.parse_threads("auto") <= threads.usable_cores()
    for bad in ("-1", 0, "two", 1.5):
        with pytest.raises(ParameterError, match="threads"):
            threads.parse_threads(bad)
