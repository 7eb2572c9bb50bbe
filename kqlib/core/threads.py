"""How many torch threads to use: the cores that are free now, or what the user says.

Torch's default (one thread per core) is the right choice only on an idle machine: its threads wait for each
other at every operation, so one busy competitor on a 2-core machine makes an attribution ~3x slower with
2 threads, but only ~2x slower with 1. :func:`free_cores` samples ``/proc/stat`` for ``interval`` seconds:

    busy = (1 - yielding_time / total_time) * cores,        free = max(1, cores - round(busy))

where ``yielding_time`` is idle + iowait + *nice* time: work at a lower priority (``nice -n 19 ...``) gives
its core up as soon as we want it, so it does not make us drop threads.

(Linux; elsewhere ``os.getloadavg``; else all cores). Chosen at the edges only: ``kq attribute`` (``--threads``,
default ``auto``) and the book's ``Chapter.localize`` pass ``threads="auto"`` to :func:`kqlib.attribute_many`,
which looks at the free cores again between queries; the library never changes the thread count unasked.
"""

from __future__ import annotations

import os
import time

import torch

from kqlib.errors import ParameterError


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times(path: str = "/proc/stat") -> tuple[int, int] | None:
    """``(yielding, total)`` CPU time of the machine so far: the first line of ``/proc/stat`` is
    ``cpu user nice system idle iowait irq softirq steal ...``; yielding = nice + idle + iowait."""
    try:
        with open(path) as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    yielding = fields[1] + fields[3] + (fields[4] if len(fields) > 4 else 0)  # nice + idle + iowait
    return yielding, sum(fields[:8])


def free_cores(interval: float = 0.25) -> int:
    """Cores not busy with other work right now (>= 1), by sampling the machine's CPU times."""
    cores = usable_cores()
    first = _cpu_times()
    if first is not None:
        time.sleep(interval)
        second = _cpu_times()
        d_total = second[1] - first[1]
        if d_total > 0:
            busy = (1 - (second[0] - first[0]) / d_total) * (os.cpu_count() or cores)
            return max(1, min(cores, cores - round(busy)))
    try:
        return max(1, min(cores, cores - round(os.getloadavg()[0])))
    except OSError:
        return cores


def parse_threads(value) -> int | None:
    """``"auto"`` -> :func:`free_cores`; a positive integer -> itself; None/"" -> None (torch's default)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return free_cores()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or (isinstance(value, float) and value != n):
        raise ParameterError(f"threads must be 'auto' or a positive integer, got {value!r}")
    return n


def set_threads(value) -> int:
    """Apply :func:`parse_threads` to torch (None leaves torch's default); returns the thread count in use."""
    n = parse_threads(value)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()
