"""The ``kq`` command: argparse subcommands from a small registry.

A module adds a subcommand with ``kqlib.cli.register(Command(name, help, add_arguments, run))`` at import
time and lists itself in :data:`EXTENSIONS` (modules that are not there yet are skipped). ``run(args)``
returns the exit status. A :class:`~kqlib.errors.KqError` becomes its message on stderr and exit status
2 (or the error's ``exit_code``), with no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

from kqlib.errors import KqError, MissingDependencyError, ParameterError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []
#: Modules whose import registers more subcommands.
EXTENSIONS = ("kqlib.commands", "kqlib.bench", "kqlib.teaching.commands")


def register(command: Command) -> Command:
    COMMANDS[:] = [c for c in COMMANDS if c.name != command.name] + [command]
    return command


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
    import math

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
    import importlib.util
    import os
    from pathlib import Path

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
    import os
    from pathlib import Path

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


# ------------------------------------------------------------------------------------------ built-ins


def _book_args(p):
    from kqlib.book import runner as book

    book.add_book_arguments(p)


def _book_run(args):
    from kqlib.book import runner as book

    return book.run_book(args)


def _run_args(p):
    from kqlib.book import runner as book

    book.add_run_arguments(p)


def _run_run(args):
    from kqlib.book import runner as book

    return book.run_chapter(args)


def _models_args(p):
    pass


def _models_run(args) -> int:
    """List the embedded models, whether their wheel is installed and whether the fp32 copy is cached."""
    from kqlib.errors import MissingDependencyError
    from kqlib.core.models import EMBEDDED, cache_root

    for name, spec in EMBEDDED.items():
        try:
            spec.locate()
            installed = "wheel installed"
        except MissingDependencyError:
            installed = "wheel NOT installed"
        cached = sorted((cache_root() / "models").glob(f"{name}-*/kqlib-complete"))
        state = f"fp32 cache: {cached[-1].parent}" if cached else "fp32 cache: none (first load converts, ~30-60 s)"
        print(f"{name}\n  {spec.description}\n  {installed}; {state}")
    print("Any Hugging Face causal LM id (e.g. gpt2, meta-llama/Meta-Llama-3-8B) or a local directory also works.")
    return 0


register(Command("book", "execute every chapter (papermill) and build the HTML book", _book_args, _book_run))
register(Command("run", "execute one chapter with a profile and parameter overrides", _run_args, _run_run))
register(Command("models", "list the embedded (offline) models and their cache state", _models_args, _models_run))


# ------------------------------------------------------------------------------------------------ main


def _load_extensions() -> None:
    for name in EXTENSIONS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_extensions()
    parser = argparse.ArgumentParser(prog="kq", description="Knowledge neurons and query localization: "
                                     "run the book's chapters, build the book, list models.")
    from kqlib import __version__

    parser.add_argument("--version", action="version", version=f"kqlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with stop_on_signals():
            status = args._run(args)
    except KqError as exc:
        print(f"kq {args.command}: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", 130)
        how = {130: "Ctrl-C (SIGINT)", 143: "SIGTERM"}.get(code, f"signal {code - 128}")
        print(f"kq {args.command}: interrupted by {how}; finished work is kept (attribution cache, executed "
              f"chapters): rerun the same command to resume.", file=sys.stderr)
        return code
    return int(status or 0)


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise :class:`~kqlib.errors.Interrupted` in the main thread, so that every
    ``finally`` runs (the book runner shuts its kernel down and removes partial notebooks) and the command
    exits 130 / 143. Outside the main thread, and for a signal the parent ignores, nothing changes."""
    import signal
    import threading

    from kqlib.errors import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    # a signal the parent set to be ignored (nohup, a background job) stays ignored
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
           if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    # `python -m kqlib.cli`: run the imported module's main, so that extensions registering with
    # `kqlib.cli.register` and this entry point share one command registry
    from kqlib.cli import main as _main

    sys.exit(_main())
