"""Execute the book's chapters with papermill and build its HTML (``kq book``, ``kq run``).

Layout (committed sources vs. build products)::

    _config.yml, _toc.yml, references.bib      book configuration (repo root)
    book/intro.md, book/*.md                    prose pages
    book/NN_name.py                             chapters: jupytext percent notebooks, never executed in place
    _build/executed/                            a complete, buildable copy of the book: the config, toc, bib
                                                and .md pages copied, each chapter as its EXECUTED .ipynb,
                                                _static/mathjax (MathJax 3 from django-static-mathjax)
    _build/html/                                the site (``jupyter-book build _build/executed
                                                --path-output .`` writes <path-output>/_build/html)
    _build/results/NN_name.json                 each chapter's headline numbers and run record
    _build/timings.json                         seconds per chapter and for the HTML build, per profile (ETA)
    _build/failed/NN_name.ipynb                 the partial notebook of a chapter that failed (never rendered)

The toc lists chapters by extension-less path (``book/00_setup``), which resolves to the ``.py`` source in
the repo and to the executed ``.ipynb`` in ``_build/executed``. A chapter is executed into
``_build/tmp/`` (papermill saves partial notebooks as it goes) and its outputs (results, tidy data, figures)
are written under ``_build/tmp/NN_name.out/`` (``KQ_OUTPUT_DIR``); only when it finished are they moved into
place with the notebook and its input record. A failed or interrupted run keeps the last good notebook,
record, results and data; the run stops naming chapter, cell and error. The chapter's kernel runs in the
chapter's folder with ``KQ_BUILD_DIR`` set to ``_build`` (where it reads other chapters' results).

One writer: ``kq run`` and ``kq book`` hold ``_build/.lock`` (:mod:`kqlib.book.run.lock`); a second command on
the same build stops at once naming the holder.

Progress: the runner sets ``KQ_PROGRESS_FILE`` (:data:`kqlib.runs.progress.CHANNEL_ENV`) for the kernel to
``_build/tmp/NN_name.progress.jsonl``; every :class:`kqlib.runs.progress.Progress` inside the chapter (ParaRel
scan, attributions per model and method, edits) appends its updates there instead of printing into the
page, and a thread of the runner prints each one on the terminal with the whole run's ETA.

Stopping: Ctrl-C (SIGINT) or SIGTERM raises :class:`~kqlib.errors.Interrupted` in the runner (see
:func:`kqlib.cli.stop_on_signals`); the chapter's kernel (its own process group) is killed, the partial
notebook removed, and the command exits 130 / 143. Attributions that finished are in the on-disk cache.

Resuming: next to each executed notebook, ``NN_name.inputs.json`` records what it was made from (chapter
source, parameters, kqlib version and source digest, the models' identities, the executor, the ParaRel data
and other chapters' results it reads) with the digests of its outputs; ``kq book`` skips a chapter whose record
matches and whose outputs are unchanged (``--force`` re-executes); a chapter that reads the results of a chapter
re-executed in the same run (the scorecard) is re-executed after it. The record is written last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from kqlib.book.profiles import declared_parameters, load_profile, parameters_for, parse_overrides, profile_names
from kqlib.book.report import read_results
from kqlib.book.run.lock import build_lock
from kqlib.book.run.progress import RunnerProgress, Timings, _ChannelTail  # noqa: E402,F401 (re-exported)
from kqlib.book.run.resume import (  # noqa: E402,F401 (re-exported: the runner's API)
    chapter_inputs,
    check_models,
    inputs_digest,
    inputs_path,
    kqlib_digest,
    model_identity,
    model_names,
    publish,
    reads_results,
    stale_readers,
    up_to_date,
)
from kqlib.book.site.html import (  # noqa: E402,F401 (re-exported: the runner's API)
    _MATHJAX_SKIP,
    build_html,
    mathjax_source,
    stage,
)
from kqlib.book.toc import (  # noqa: E402,F401 (re-exported: the runner's API)
    BUILD,
    EXECUTED,
    MATHJAX_DEST,
    executed_path,
    find_root,
    match_chapter,
    notebook_chapters,
    source_of,
    toc_documents,
)
from kqlib.errors import ChapterFailed, KqError, ParameterError, TooFewFacts  # noqa: F401 (ChapterFailed re-exported)
from kqlib.runs.progress import CHANNEL_ENV

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# ---------------------------------------------------------------------------------------- execution


def _cell_lines(chapter: Path, n_cells: int) -> list[int]:
    """First line of each cell in a percent-format .py (``[]`` when the markers don't match the cells)."""
    try:
        lines = chapter.read_text().splitlines()
    except OSError:
        return []
    markers = [i + 1 for i, ln in enumerate(lines) if ln.startswith("# %%")]
    return markers if len(markers) == n_cells else []


def _failure_message(chapter: Path, nb, err: BaseException, root: Path, kept: Path | None) -> str:
    """Name the chapter, the source cell (1-based, the .py's cells), its line and the error."""
    skip = ("injected-parameters", "papermill-error-cell-tag")
    cells = [c for c in (nb.cells if nb is not None else [])
             if not any(t in c.get("metadata", {}).get("tags", []) for t in skip)]
    failed = [i for i, c in enumerate(cells)
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))
              or c.get("metadata", {}).get("papermill", {}).get("exception")]
    started = [i for i, c in enumerate(cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    index = failed[0] if failed else (started[-1] if started else None)  # else: timeout / dead kernel
    where = "before any cell ran"
    if index is not None:
        first = next((ln for ln in cells[index].source.splitlines() if ln.strip()), "")
        where = f"cell {index + 1}"
        lines = _cell_lines(chapter, len(cells))
        if lines:
            where += f" (line {lines[index]})"
        where += f": {first.strip()[:80]}"
    if hasattr(err, "ename"):
        tb = _ANSI.sub("", "\n".join(err.traceback or []))
        tail = "\n".join(tb.strip().splitlines()[-8:])
        error = f"{err.ename}: {err.evalue}\n{tail}"
    else:
        error = f"{type(err).__name__}: {_ANSI.sub('', str(err)).strip()[:2000]}"
    msg = f"Chapter {chapter.relative_to(root)} failed at {where}\n{error}"
    if kept is not None:
        msg += f"\nPartial notebook (not rendered): {kept.relative_to(root)}"
    return msg


_KERNEL_PGIDS: list[int] = []


def _kernel_manager_class():
    """jupyter_client's AsyncKernelManager, remembering the process group of every kernel it launches, so
    that an interrupted run can make sure its kernel is gone (the kernel runs in its own session: the
    terminal's Ctrl-C does not reach it)."""
    from jupyter_client import AsyncKernelManager  # heavy: jupyter_client, only to run a chapter

    class TrackedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            await super()._async_launch_kernel(kernel_cmd, **kw)
            pgid = getattr(self.provisioner, "pgid", None) or getattr(self.provisioner, "pid", None)
            if pgid:
                _KERNEL_PGIDS.append(int(pgid))

    return TrackedKernelManager


def _kill_kernels(pgids: list[int]) -> None:

    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def _kernel_environment(values: Mapping[str, str]):
    """Set variables for the chapter's kernel (it inherits the runner's environment when it starts)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_chapter(root: Path, chapter: Path, profile: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                    parameters: Mapping[str, Any] | None = None, progress=None,
                    inputs: Mapping[str, Any] | None = None) -> Path:
    """Execute ``chapter`` into ``_build/executed`` (atomically); raises :class:`ChapterFailed`.

    ``progress``: a callable given each update the chapter's kernel sends through the progress channel
    (:mod:`kqlib.runs.progress`; the runner prints them). ``inputs``: the chapter's input record
    (:func:`chapter_inputs`), written next to the executed notebook once it is in place. An interruption
    (:class:`~kqlib.errors.Interrupted`, Ctrl-C) kills the kernel, removes the partial notebook and the stale
    executed copy, and propagates.
    """
    # heavy: jupytext, nbformat and papermill, only to run a chapter
    import jupytext
    import nbformat
    import papermill


    params = dict(parameters) if parameters is not None else parameters_for(chapter, profile, overrides)
    build = root / BUILD
    final = executed_path(root, chapter)
    tmp = build / "tmp" / final.name
    failed = build / "failed" / final.name
    channel = build / "tmp" / f"{chapter.stem}.progress.jsonl"
    staged = build / "tmp" / f"{chapter.stem}.out"  # the chapter's outputs until it finished
    for p in (tmp, failed, channel):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.unlink(missing_ok=True)
    shutil.rmtree(staged, ignore_errors=True)
    nb = jupytext.read(chapter)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    timeout = int(profile.get("cell_timeout") or 0) or None

    env = {"KQ_BUILD_DIR": str(build), "KQ_OUTPUT_DIR": str(staged), CHANNEL_ENV: str(channel)}
    tail = _ChannelTail(channel, progress) if progress is not None else None
    n_kernels = len(_KERNEL_PGIDS)
    try:
        with _kernel_environment(env):
            papermill.execute_notebook(
                nb, str(tmp), parameters=params, kernel_name="python3", cwd=str(chapter.parent),
                progress_bar=False, log_output=False, execution_timeout=timeout,
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # no TCP warning; errors show in the notebook
                kernel_manager_class=_kernel_manager_class(), shutdown_kernel="immediate",
            )
    except Exception as err:  # noqa: BLE001 - every failure is reported the same way
        partial = nbformat.read(tmp, as_version=4) if tmp.exists() else None
        kept = None
        if tmp.exists():
            os.replace(tmp, failed)
            kept = failed
        shutil.rmtree(staged, ignore_errors=True)  # the last good notebook, record, results and data stay
        if getattr(err, "ename", None) == TooFewFacts.__name__:  # the chapter's own clear stop: no traceback
            failed.unlink(missing_ok=True)
            raise TooFewFacts(f"chapter {chapter.relative_to(root)} stopped: {_ANSI.sub('', err.evalue)}") from None
        raise ChapterFailed(_failure_message(chapter, partial, err, root, kept)) from None
    except BaseException:  # Ctrl-C / SIGTERM: stop now, keep nothing half-written

        # a second Ctrl-C must not interrupt the clean-up
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        # nbclient's pending cell task sees the dead kernel later; asyncio would log that as a traceback
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        try:
            _kill_kernels(_KERNEL_PGIDS[n_kernels:])  # nbclient may not have managed to shut it down
            tmp.unlink(missing_ok=True)
            shutil.rmtree(staged, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        raise
    finally:
        if tail is not None:
            tail.stop()
        channel.unlink(missing_ok=True)
        del _KERNEL_PGIDS[n_kernels:]
    out = nbformat.read(tmp, as_version=4)
    out.metadata.pop("jupytext", None)
    out.metadata.get("papermill", {}).update(input_path=str(chapter.relative_to(root)),
                                             output_path=str(final.relative_to(root)))
    nbformat.write(out, tmp)
    publish(root, chapter, tmp, staged, inputs)
    return final


# ------------------------------------------------------------------------------------------ commands


def _overrides(args) -> dict[str, Any]:
    over = parse_overrides(args.param)
    if args.model:
        if "models" in over or "model" in over:
            raise ParameterError("Give the models either with --model or with -p models=..., not both.")
        over["model"] = args.model[0] if len(args.model) == 1 else list(args.model)
    return over


def _model_shorthand(chapter: Path, over: dict[str, Any]) -> dict[str, Any]:
    """``--model X`` means ``model=X``, or ``models=[X, ...]`` for a chapter that declares only ``models``."""

    if "model" in over:
        declared = declared_parameters(chapter)
        if "model" not in declared and "models" in declared:
            value = over.pop("model")
            over["models"] = value if isinstance(value, list) else [value]
    return over


def _common_arguments(p) -> None:
    p.add_argument("--profile", default="cpu", help=f"run profile from kqlib/book/profiles.toml: {', '.join(profile_names())} "
                   "(default: cpu)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="override a chapter parameter; VALUE is a Python literal (5, 0.1, True, ['a','b']) or a "
                        "string; a comma-separated string is accepted for a list. Repeatable.")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="shorthand for -p models=[NAME] (repeat for several models)")
    p.add_argument("--root", help="book root (default: the folder holding _toc.yml at or above the cwd)")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where the chapters' attributions run (default: the profile's `executor`, else local); "
                        "ray: an actor pool on a Ray cluster (see the page 'Running the paper at scale')")
    p.add_argument("--address", default=None, help="Ray cluster address for --executor ray (auto | HOST:PORT)")


def with_executor(params: Mapping[str, Any], args, profile: Mapping[str, Any]) -> dict:
    """The chapter's parameters plus where its attributions run, passed as values (like ``profile``):
    ``executor`` (``--executor``, else the profile's, else local) and ``ray_address``."""
    executor = args.executor or profile.get("executor") or "local"
    address = args.address or profile.get("address") or None
    if executor == "local" and address is None:  # the chapters' default: pass nothing (papermill warns on extras)
        return dict(params)
    return {**params, "executor": executor, "ray_address": address}


def add_book_arguments(p) -> None:
    _common_arguments(p)
    p.add_argument("--only", action="append", metavar="PREFIX",
                   help="execute only the chapters whose file name starts with PREFIX (repeatable); the others "
                        "must have been executed before")
    p.add_argument("--no-execute", action="store_true", help="only rebuild the HTML from the executed notebooks")
    p.add_argument("--no-html", action="store_true", help="execute the chapters, skip the HTML build")
    p.add_argument("--force", action="store_true",
                   help="re-execute every chapter, even those whose inputs (source, parameters, kqlib, models) are "
                        "unchanged since their last execution (by default those are skipped)")


def add_run_arguments(p) -> None:
    p.add_argument("chapter", help="prefix of the chapter's file name, e.g. 01 or 01_kn")
    _common_arguments(p)


def run_book(args) -> int:
    """``kq book``: execute every chapter (or ``--only`` ones), then build the HTML; holds the build's lock."""

    root = find_root(args.root)
    with build_lock(root / BUILD):
        return _run_book(root, args)


def _run_book(root: Path, args) -> int:
    profile = load_profile(args.profile)
    over = _overrides(args)
    chapters = notebook_chapters(root)
    if args.only:  # each chapter once, in the book's order; with the HTML build, the chapters reading results too

        wanted = {match_chapter(root, p) for p in args.only}
        wanted |= set() if args.no_html else {ch for ch in chapters if reads_results(ch)}
        chapters = [ch for ch in chapters if ch in wanted] + sorted(wanted - set(chapters))
    if args.no_execute:
        chapters = []

        for path in sorted((root / BUILD / "results").glob("*.json")):
            read_results(path)  # a damaged one is named as such (what to do), before anything else
        stale = stale_readers(root)
        if stale:  # the site would show numbers that are not the chapters' current results
            lines = [f"  {ch}: results of {', '.join(others) or 'other chapters'} changed since it was executed"
                     for ch, others in stale.items()]
            raise ParameterError("The HTML build would publish stale pages:\n" + "\n".join(lines) + "\nRe-execute "
                                 f"them first: kq book --only {' --only '.join(s[:2] for s in stale)} (or kq book).")
    # check every chapter's parameters before running anything; an override goes to the chapters that
    # declare it and must be declared by at least one

    plans, known = [], set()
    for ch in chapters:
        mine = _model_shorthand(ch, dict(over))
        declared = declared_parameters(ch)
        known |= {k for k in over if k in mine and k in declared} | ({"model"} if "model" in over and "model" not in mine else set())
        plans.append((ch, parameters_for(ch, profile, {k: v for k, v in mine.items() if k in declared})))
    unknown = sorted(set(over) - known) if chapters else []
    if unknown:
        raise ParameterError(f"No chapter to execute declares the parameter(s) {', '.join(unknown)}.")
    check_models(plans)
    steps = [str(ch.relative_to(root)) for ch in chapters] + ([] if args.no_html else ["html"])
    timings = Timings(root, profile["name"])
    executor = args.executor or profile.get("executor") or "local"
    # which chapters are up to date (their executed notebook was made from the same inputs): skipped
    # a chapter that reads the results of one executed in this run (the scorecard) is executed after it

    todo, running = [], []
    for ch, params in plans:
        inputs = chapter_inputs(root, ch, params, executor)
        fresh, why = (False, "--force") if args.force else up_to_date(root, ch, inputs)
        if fresh and running and reads_results(ch):
            fresh, why = False, f"changed: results of {', '.join(running)} (executed in this run)"
        if not fresh:
            running.append(ch.stem)
        todo.append((ch, params, inputs, fresh, why))
    n_run = sum(not fresh for *_, fresh, _ in todo)
    skip = {s for s, (*_, fresh, _) in zip(steps, todo) if fresh}
    progress = RunnerProgress(timings, steps, "kq book", skip=skip)

    eta = timings.eta_text(progress.ahead(0))
    progress.line(f"profile {profile['name']}: {n_run} of {len(chapters)} chapter(s) to execute"
                  f"{'' if args.no_html else ', then the HTML build'}; ETA {eta}")
    for i, (ch, params, inputs, fresh, why) in enumerate(todo):
        if fresh:
            progress.skipped(i, f"skipped, {why} (--force re-executes it)")
            continue
        progress.start(i)
        if why != "not executed yet":
            progress.line(f"{i + 1}/{len(steps)} {steps[i]}: executing ({why})")
        t0 = time.time()
        if inputs.get("results") is not None:  # the results as they are now, after the chapters before it
            inputs = chapter_inputs(root, ch, params, executor)
        execute_chapter(root, ch, profile, parameters=with_executor(params, args, profile), progress=progress.update,
                        inputs=inputs)
        progress.done(i, time.time() - t0)
    if not args.no_html:
        i = len(plans)
        progress.start(i)
        t0 = time.time()
        index = build_html(root)
        progress.done(i, time.time() - t0)
        progress.line(f"site: {index}")
    return 0


def run_chapter(args) -> int:
    """``kq run CHAPTER``: execute one chapter with the profile and overrides (no HTML); holds the build's lock."""

    root = find_root(args.root)
    with build_lock(root / BUILD):
        return _run_chapter(root, args)


def _run_chapter(root: Path, args) -> int:
    profile = load_profile(args.profile)
    chapter = match_chapter(root, args.chapter)
    params = parameters_for(chapter, profile, _model_shorthand(chapter, _overrides(args)))
    check_models([(chapter, params)])
    step = str(chapter.relative_to(root))
    timings = Timings(root, profile["name"])
    progress = RunnerProgress(timings, [step], "kq run")
    progress.line(f"profile {profile['name']}, parameters: "
                  + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    inputs = chapter_inputs(root, chapter, params, args.executor or profile.get("executor") or "local")
    progress.start(0)
    t0 = time.time()
    out = execute_chapter(root, chapter, profile, parameters=with_executor(params, args, profile),
                          progress=progress.update, inputs=inputs)
    progress.done(0, time.time() - t0)
    progress.line(f"executed notebook: {out.relative_to(root)}")
    results = root / BUILD / "results" / f"{chapter.stem}.json"
    if results.exists():
        progress.line(f"results: {results.relative_to(root)}")
    return 0
