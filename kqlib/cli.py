"""The ``kq`` command: one literal table of subcommands (:data:`COMMANDS`).

Each subcommand is a :class:`~kqlib.cli_args.Command` (name, help, add_arguments, run) defined beside its code:
``book``, ``run`` and ``models`` here, ``data`` and ``attribute`` in :mod:`kqlib.commands`, ``bench`` in
:mod:`kqlib.bench.suite`, ``assignments`` and ``grade`` in :mod:`kqlib.teaching.commands`. To add one, define it
in its module and list it in :data:`COMMANDS`. ``run(args)`` returns the exit status. A
:class:`~kqlib.errors.KqError` becomes its message on stderr and exit status 2 (or the error's ``exit_code``),
with no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from kqlib import __version__
from kqlib import commands as data_commands
from kqlib.bench import suite as bench
from kqlib.book.run import runner
from kqlib.core.models import EMBEDDED, cache_root
from kqlib.cli_args import (  # noqa: F401 (re-exported: the argument checks, under their old home)
    Command, check_output_file, check_writable_folder, float_in, id_list, int_at_least, output_file)
from kqlib.errors import Interrupted, KqError, MissingDependencyError
from kqlib.teaching import commands as teaching_commands


# ------------------------------------------------------------------------------------------ built-ins


def _book_args(p):
    runner.add_book_arguments(p)


def _book_run(args):
    return runner.run_book(args)


def _run_args(p):
    runner.add_run_arguments(p)


def _run_run(args):
    return runner.run_chapter(args)


def _models_args(p):
    pass


def _models_run(args) -> int:
    """List the embedded models, whether their wheel is installed and whether the fp32 copy is cached."""

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


BOOK = Command("book", "execute every chapter (papermill) and build the HTML book", _book_args, _book_run)
RUN = Command("run", "execute one chapter with a profile and parameter overrides", _run_args, _run_run)
MODELS = Command("models", "list the embedded (offline) models and their cache state", _models_args, _models_run)


#: Every ``kq`` subcommand, in the order ``kq --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    BOOK, RUN, MODELS,
    data_commands.DATA, data_commands.ATTRIBUTE,
    bench.BENCH,
    teaching_commands.ASSIGNMENTS, teaching_commands.GRADE,
)


# ------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kq", description="Knowledge neurons and query localization: "
                                     "run the book's chapters, build the book, list models.")
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
    sys.exit(main())
