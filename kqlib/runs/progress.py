"""kqlib's one progress primitive: items done of a total, rate, elapsed time and an ETA from measured times.

``Progress(total, desc)`` / ``.step(n=1, note=None)`` / ``.close()`` (also a context manager). Updates are
throttled to one every ``every`` seconds (plus the first and the last). An update goes to:

* stderr, as a plain line (``[kqlib] ig attribution: 12/40  2.10 s/query  elapsed 0:25  ETA 0:59``), when
  ``enabled`` and no runner channel is set;
* the book runner's channel, when there is one: JSON lines appended to a file. ``kq book`` / ``kq run``
  (:mod:`kqlib.book.run.runner`) set :data:`CHANNEL_ENV` (``KQ_PROGRESS_FILE``) in the environment of the chapter's
  kernel and print each update on the terminal as it comes. Inside a chapter run by the runner, progress
  therefore never reaches the cell outputs (the rendered page), whatever ``enabled`` says, and the runner
  still shows it. ``KQ_PROGRESS_FILE`` is the runner's channel, read here and nowhere else; it is not a
  user setting.

The ETA is shown once ``eta_after`` items are done (before that it is "unknown"): remaining items times the
measured seconds per item so far.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import IO

#: The book runner's channel: a file the runner tails; each update is one JSON object per line.
CHANNEL_ENV = "KQ_PROGRESS_FILE"


def fmt_duration(seconds: float | None) -> str:
    """``"m:ss"`` under an hour, ``"h:mm:ss"`` above; ``"unknown"`` for None, NaN or infinity."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = max(int(round(seconds)), 0)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def channel_path() -> Path | None:
    """The runner's progress file, when this process runs inside a chapter executed by ``kq book``/``kq run``."""
    value = os.environ.get(CHANNEL_ENV)
    return Path(value) if value else None


def _plural(unit: str) -> str:
    return unit if unit.endswith("s") else (unit[:-1] + "ies" if unit.endswith("y") else unit + "s")


class Progress:
    """Progress of ``total`` items named ``desc`` (see the module docstring).

    ``unit``: the item's name (``"query"``, ``"fact"``, ``"edit"``). ``rate``: ``"per_item"`` (s/query),
    ``"per_second"`` (queries/s) or ``"auto"`` (whichever is >= 1). ``start_note``: added to the first line
    (e.g. ``"12 from cache"``). ``stream``: where lines go (default stderr). ``channel``: the runner's file
    (default :func:`channel_path`; ``False``: none).
    """

    def __init__(self, total: int, desc: str, unit: str = "item", *, enabled: bool = True, every: float = 2.0,
                 eta_after: int = 2, rate: str = "auto", start_note: str | None = None, label: str = "kqlib",
                 stream: IO | None = None, channel: str | os.PathLike | None | bool = None):
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, every
        self.eta_after, self.rate_style, self.label = eta_after, rate, label
        self.stream = stream
        self.channel = channel_path() if channel is None else (Path(channel) if channel else None)
        self.enabled = enabled
        self.done, self.t0, self.last, self.note = 0, time.time(), 0.0, None
        self.reported = self.closed = False
        if self.total > 0 or start_note:
            self._emit("start", f"{self.total} {_plural(unit) if self.total != 1 else unit} to do"
                                + (f", {start_note}" if start_note else ""))

    # --- numbers ---------------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    @property
    def seconds_per_item(self) -> float | None:
        return self.elapsed / self.done if self.done else None

    @property
    def eta(self) -> float | None:
        """Seconds left: remaining items x measured seconds per item (None before ``eta_after`` items)."""
        if self.done >= self.total:
            return 0.0
        if self.done < max(self.eta_after, 1):
            return None
        return (self.total - self.done) * self.seconds_per_item

    def rate_text(self) -> str:
        spi = self.seconds_per_item
        if not spi:
            return ""
        per_second = self.rate_style == "per_second" or (self.rate_style == "auto" and spi < 1.0)
        return f"{1.0 / spi:.2f} {_plural(self.unit)}/s" if per_second else f"{spi:.2f} s/{self.unit}"

    def text(self) -> str:
        rate = self.rate_text()
        return (f"{self.done}/{self.total}" + (f"  {rate}" if rate else "") + (f" {self.note}" if self.note else "")
                + f"  elapsed {fmt_duration(self.elapsed)}  ETA {fmt_duration(self.eta)}")

    # --- updates ---------------------------------------------------------------------------------------------
    def step(self, n: int = 1, note: str | None = None) -> None:
        self.done = min(self.done + int(n), self.total) if self.total else self.done + int(n)
        if note is not None:
            self.note = note
        now = time.time()
        if self.done >= self.total or not self.reported or now - self.last >= self.every:
            self.last, self.reported = now, True
            self._emit("step", self.text())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._emit("close", None)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _emit(self, event: str, text: str | None) -> None:
        if self.channel is not None:
            record = dict(event=event, desc=self.desc, unit=self.unit, done=self.done, total=self.total,
                          elapsed=round(self.elapsed, 3), eta=None if self.eta is None else round(self.eta, 3),
                          rate=self.rate_text(), text=text, pid=os.getpid(), time=time.time())
            try:
                with open(self.channel, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError:
                pass  # the runner's display is best effort; it never stops the work
            return
        if self.enabled and text is not None:
            print(f"[{self.label}] {self.desc}: {text}", file=self.stream or sys.stderr, flush=True)
