"""What the book runner prints while it runs: per-chapter timings (``_build/timings.json``, the next run's ETA) and
the live progress lines, including those a chapter sends through the runner's channel file."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from kqlib.book.toc import BUILD
from kqlib.runs.progress import Progress, fmt_duration

# ------------------------------------------------------------------------------------------- timing


MEASURED = Path(__file__).with_name("measured_timings.json")  # a measured cpu run, shipped: the first run's ETA


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Timings:
    """``_build/timings.json``: ``{profile: {step: seconds}}``; steps are chapter paths and ``"html"``.

    ``previous`` (the ETA's source) is this build's last time per step, else the shipped measurement of
    :data:`MEASURED` (so a fresh clone's first ``make book`` has an ETA too)."""

    def __init__(self, root: Path, profile: str, measured: Path = MEASURED):
        self.path = root / BUILD / "timings.json"
        self.profile = profile
        self.all = _read_json(self.path)
        bad = [p for p, steps in self.all.items() if not (isinstance(steps, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in steps.values()))]
        if self.path.exists() and (bad or not self.all):
            try:
                damaged = not self.all and self.path.read_text().strip() not in ("", "{}")
            except OSError:
                damaged = True
            if bad or damaged:  # only an ETA source: say so, and write it again without the damage
                print(f"[kq] {self.path} was damaged (not {{profile: {{step: seconds}}}}"
                      f"{': ' + ', '.join(map(repr, bad)) if bad else ''}); rewritten without the damaged part "
                      "(no ETA from it until the steps run again).", file=sys.stderr, flush=True)
                self.all = {p: steps for p, steps in self.all.items() if p not in bad}
                self._write()
        self.all = {p: steps for p, steps in self.all.items() if p not in bad}
        shipped = _read_json(measured).get(profile, {})
        self.previous = {**(shipped if isinstance(shipped, dict) else {}), **self.all.get(profile, {})}

    def eta(self, steps: list[str]) -> float | None:
        if any(s not in self.previous for s in steps):
            return None
        return sum(self.previous[s] for s in steps)

    def eta_text(self, steps: list[str], spent: float = 0.0) -> str:
        """The ETA of ``steps`` as text (``spent``: seconds the first of them has already run): the sum of
        their last times; a lower bound ``">= m:ss (+ N step(s) never timed)"`` when some were never timed
        (a chapter added since the shipped measurement); ``"unknown"`` when none was."""
        known = [s for s in steps if s in self.previous]
        if not known:
            return "unknown"
        left = sum(self.previous[s] for s in known)
        if steps and steps[0] in self.previous:
            left -= min(spent, self.previous[steps[0]])
        missing = len(steps) - len(known)
        return fmt_duration(left) if not missing else f">= {fmt_duration(left)} (+ {missing} step(s) never timed)"

    def record(self, step: str, seconds: float) -> None:
        self.all.setdefault(self.profile, {})[step] = round(seconds, 2)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.all, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


class RunnerProgress:
    """The runner's terminal lines: step i/n, elapsed, whole-run ETA, and the live updates that the chapter's
    kernel sends through the progress channel (see :mod:`kqlib.runs.progress`), one line per update.

    The whole-run ETA comes from the previous run of the same profile (``_build/timings.json``): the steps
    still to run, minus the time the current one has already taken; "unknown" for a step never timed."""

    def __init__(self, timings: Timings, steps: list[str], label: str = "kq", skip: set[str] = frozenset()):

        self.timings, self.steps, self.label, self.skip = timings, steps, label, set(skip)
        self.bar = Progress(len(steps), "book", "step", label=label, stream=sys.stdout, channel=False,
                            enabled=False)  # counts and times; the lines are written by `line`
        self.current: int | None = None
        self.t_step = time.time()
        self.said_empty: set = set()

    def line(self, text: str) -> None:
        print(f"[{self.label}] {text}", flush=True)

    def ahead(self, i: int) -> list[str]:
        """Steps from ``i`` on that will run (not skipped)."""
        return [s for s in self.steps[i:] if s not in self.skip]

    def run_eta_text(self, i: int) -> str:
        """:meth:`run_eta` as text, a lower bound where steps were never timed (:meth:`Timings.eta_text`)."""
        return self.timings.eta_text(self.ahead(i), spent=time.time() - self.t_step)

    def run_eta(self, i: int) -> float | None:
        """Seconds left in the whole run while step ``i`` runs."""
        prev = self.timings.previous.get(self.steps[i])
        rest = self.timings.eta(self.ahead(i + 1))
        if prev is None or rest is None:
            return None
        return max(prev - (time.time() - self.t_step), 0.0) + rest

    def start(self, i: int) -> None:

        self.current, self.t_step, self.said_empty = i, time.time(), set()
        self.line(f"{i + 1}/{len(self.steps)} {self.steps[i]}: started "
                  f"(elapsed {fmt_duration(self.bar.elapsed)}, ETA {self.timings.eta_text(self.ahead(i))})")

    def skipped(self, i: int, why: str) -> None:
        self.bar.step()
        self.line(f"{i + 1}/{len(self.steps)} {self.steps[i]}: {why}")

    def done(self, i: int, seconds: float) -> None:

        self.timings.record(self.steps[i], seconds)
        self.bar.step()
        self.current = None
        self.line(f"{i + 1}/{len(self.steps)} {self.steps[i]}: done in {seconds:.1f} s "
                  f"(elapsed {fmt_duration(self.bar.elapsed)}, ETA {self.timings.eta_text(self.ahead(i + 1))})")

    def update(self, record: Mapping[str, Any]) -> None:
        """One update from inside the running chapter (a JSON record of the progress channel)."""

        if record.get("event") == "close" or not record.get("text"):
            return
        if not record.get("total"):  # nothing to do (all cached): said once per step name and chapter
            if record.get("desc") in self.said_empty:
                return
            self.said_empty.add(record.get("desc"))
        i = self.current
        where = f"{i + 1}/{len(self.steps)} {self.steps[i]}" if i is not None else "chapter"
        eta = f" | run ETA {self.run_eta_text(i)}" if i is not None else ""
        self.line(f"{where} | {record.get('desc')}: {record['text']}{eta}")


class _ChannelTail:
    """A thread that follows the progress channel file while the chapter executes and hands every complete
    JSON line to ``sink``; ``stop()`` reads what is left and joins."""

    def __init__(self, path: Path, sink, every: float = 0.5):

        self.path, self.sink, self.every, self.pos = path, sink, every, 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kq-progress-tail", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # only complete lines; the rest is read next time
        self.pos += end
        for raw in data[:end].splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            try:
                self.sink(record)
            except Exception:  # noqa: BLE001 - the display never stops the run
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._read()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self._read()
