"""What every ``kq`` subcommand shares: the :class:`Command` record and the argument checks.

A subcommand module (``kqlib.commands``, ``kqlib.bench.suite``, ``kqlib.teaching.commands``) defines its
:class:`Command` values with these checks; ``kqlib.cli`` lists them all in one literal table.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kqlib.errors import KqError, MissingDependencyError, ParameterError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------- argument checking
# Every value is checked before any work starts (model load, ParaRel scan, attribution): argparse types for
# single values (a bad one is an argparse error: usage + message, exit 2), ``check_*`` for the rest (a
# ParameterError: message, exit 2).


def int_at_least(low: int, what: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an int >= ``low`` (``--steps 0``, ``--threads -1`` are refused, not replaced)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}{what}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def float_in(low: float, high: float, what: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a finite float in ``[low, high]``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}]{what}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def id_list(text: str | None, option: str, example: str) -> list[str] | None:
    """``"P103,P36"`` -> ``["P103", "P36"]``; None stays None (the default). An empty list or a repeated
    item is refused: ``''`` would otherwise mean "all" and a repeat would count the same thing twice."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise ParameterError(f"{option} {text!r} names nothing: give one or more comma-separated values, "
                             f"e.g. {option} {example} (or leave {option} out for the default).")
    if not all(items):
        raise ParameterError(f"{option} {text!r} has an empty item: write the values separated by single commas, "
                             f"e.g. {option} {example}.")
    repeated = sorted({t for t in items if items.count(t) > 1})
    if repeated:
        raise ParameterError(f"{option} {text!r} lists {', '.join(repeated)} more than once, which would count "
                             f"the same thing twice: give each value once.")
    return items


def check_output_file(path: str | None, option: str = "--out", suffixes: tuple[str, ...] = (".csv",)) -> None:
    """Refuse, before any work, an output file that could not be written at the end: an unknown suffix, a
    missing parent folder, a parent that is not a writable folder, ``.parquet`` without pyarrow/fastparquet."""

    if path is None:
        return
    out = Path(path).expanduser()
    if out.suffix.lower() not in suffixes:
        raise ParameterError(f"{option} {path}: the file name must end in {' or '.join(suffixes)} (the suffix "
                             f"picks the format).")
    if out.is_dir():
        raise ParameterError(f"{option} {path} is a folder: give a file name, e.g. {out / ('table' + suffixes[0])}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ParameterError(f"{option} {path}: the folder {parent} {what}; create it first or write elsewhere.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError(f"{option} {path}: the folder {parent} is not writable; write elsewhere.")
    if out.suffix.lower() == ".parquet" and not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
        raise MissingDependencyError(f"{option} {path}: writing .parquet needs pyarrow (pip install pyarrow); "
                                     f"or write a .csv file.")


def output_file(suffixes: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse ``type`` running :func:`check_output_file` (a bad ``--out`` is refused at parse time)."""

    def parse(text: str) -> str:
        try:
            check_output_file(text, "", suffixes)
        except KqError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None
        return text

    parse.__name__ = "output file"
    return parse


def check_writable_folder(path: str | None, option: str) -> None:
    """Refuse a local folder that cannot be created or written (``--cache /dev/null/x``); URLs are skipped
    (their own check connects)."""

    if path is None or ("://" in str(path) and not str(path).lower().startswith(("file://", "local://"))):
        return
    text = str(path).split("://", 1)[1] if "://" in str(path) else str(path)
    folder = Path(text).expanduser().absolute()
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ParameterError(f"{option} {path}: {probe} is not a folder, so {folder} cannot be created; "
                             f"give a folder path (it is created if missing).")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ParameterError(f"{option} {path}: {probe} is not writable; give a folder you can write to.")
