"""The ``kq`` command: argparse subcommands from a small registry.

A module adds a subcommand with ``kqlib.cli.register(Command(name, help, add_arguments, run))`` at import
time and lists itself in :data:`EXTENSIONS` (modules that are not there yet are skipped). ``run(args)``
returns the exit status. A :class:`~kqlib.errors.KqError` becomes its message on stderr and exit status
2 (or the error's ``exit_code``), with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

from .errors import KqError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []
#: Modules whose import registers more subcommands.
EXTENSIONS = ("kqlib.commands", "kqlib.bench", "kqlib.assignments")


def register(command: Command) -> Command:
    COMMANDS[:] = [c for c in COMMANDS if c.name != command.name] + [command]
    return command


# ------------------------------------------------------------------------------------------ built-ins


def _book_args(p):
    from . import book

    book.add_book_arguments(p)


def _book_run(args):
    from . import book

    return book.run_book(args)


def _run_args(p):
    from . import book

    book.add_run_arguments(p)


def _run_run(args):
    from . import book

    return book.run_chapter(args)


def _models_args(p):
    pass


def _models_run(args) -> int:
    """List the embedded models, whether their wheel is installed and whether the fp32 copy is cached."""
    from .errors import MissingDependencyError
    from .models import EMBEDDED, cache_root

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
    from . import __version__

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
        status = args._run(args)
    except KqError as exc:
        print(f"kq {args.command}: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"kq {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    # `python -m kqlib.cli`: run the imported module's main, so that extensions registering with
    # `kqlib.cli.register` and this entry point share one command registry
    from kqlib.cli import main as _main

    sys.exit(_main())
