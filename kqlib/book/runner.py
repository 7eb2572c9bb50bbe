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
``_build/tmp/`` (papermill saves partial notebooks as it goes) and renamed into ``_build/executed/`` only
on success; on failure the stale executed copy is removed too, and the run stops naming chapter, cell and
error. The chapter's kernel runs in the chapter's folder with ``KQ_BUILD_DIR`` set to ``_build``.

Progress: the runner sets ``KQ_PROGRESS_FILE`` (:data:`kqlib.runs.progress.CHANNEL_ENV`) for the kernel to
``_build/tmp/NN_name.progress.jsonl``; every :class:`kqlib.runs.progress.Progress` inside the chapter (ParaRel
scan, attributions per model and method, edits) appends its updates there instead of printing into the
page, and a thread of the runner prints each one on the terminal with the whole run's ETA.

Stopping: Ctrl-C (SIGINT) or SIGTERM raises :class:`~kqlib.errors.Interrupted` in the runner (see
:func:`kqlib.cli.stop_on_signals`); the chapter's kernel (its own process group) is killed, the partial
notebook removed, and the command exits 130 / 143. Attributions that finished are in the on-disk cache.

Resuming: next to each executed notebook, ``NN_name.inputs.json`` records what it was made from (chapter
source, parameters, kqlib version and source digest, the models' identities, the executor) and its digest;
``kq book`` skips a chapter whose record matches (``--force`` re-executes). The record is removed when a
chapter starts executing and written only after its notebook is in place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from kqlib.errors import KqError, ParameterError
from kqlib.book.profiles import load_profile, parameters_for, parse_overrides, profile_names

BUILD = "_build"
EXECUTED = "executed"
# not under _static: Jupyter Book adds every .js below a source `_static` folder to every page
MATHJAX_DEST = "_mathjax/mathjax"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ChapterFailed(KqError):
    """A chapter raised (or timed out, or its kernel died) while executing."""

    exit_code = 1


# ------------------------------------------------------------------------------------------ the toc


def find_root(start: str | Path | None = None) -> Path:
    """The book root: the nearest folder at or above ``start`` (default cwd) that holds ``_toc.yml``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder
    raise ParameterError(f"No _toc.yml in {here} or above: run this inside the book's repository (or pass --root).")


def toc_documents(root: Path) -> list[str]:
    """Every document of ``_toc.yml`` in reading order (root first), as extension-less relative paths."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return [str(Path(d).with_suffix("")) if Path(d).suffix in (".md", ".ipynb", ".py") else d for d in docs]


def source_of(root: Path, doc: str) -> Path:
    for suffix in (".py", ".ipynb", ".md"):
        path = root / (doc + suffix)
        if path.exists():
            return path
    raise ParameterError(f"_toc.yml lists {doc!r} but {root / doc}.py/.ipynb/.md does not exist.")


def notebook_chapters(root: Path) -> list[Path]:
    """The chapters to execute: toc entries whose source is a ``.py`` notebook."""
    return [p for p in (source_of(root, d) for d in toc_documents(root)) if p.suffix == ".py"]


def match_chapter(root: Path, prefix: str) -> Path:
    """The one notebook chapter whose file name starts with ``prefix`` (``"01"``, ``"01_kn"``)."""
    chapters = notebook_chapters(root)
    hits = [p for p in chapters if p.name.startswith(prefix)]
    if len(hits) == 1:
        return hits[0]
    listing = "\n".join(f"  {p.relative_to(root)}" for p in chapters) or "  (none)"
    what = "matches no" if not hits else "is ambiguous between"
    raise ParameterError(f"Chapter prefix {prefix!r} {what} chapter{'s' if hits else ''}. Chapters:\n{listing}")


def executed_path(root: Path, chapter: Path) -> Path:
    return root / BUILD / EXECUTED / chapter.relative_to(root).with_suffix(".ipynb")


# ------------------------------------------------------------------------------------------- timing


class Timings:
    """``_build/timings.json``: ``{profile: {step: seconds}}``; steps are chapter paths and ``"html"``."""

    def __init__(self, root: Path, profile: str):
        self.path = root / BUILD / "timings.json"
        self.profile = profile
        try:
            self.all = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.all = {}
        self.previous = dict(self.all.get(profile, {}))

    def eta(self, steps: list[str]) -> float | None:
        if any(s not in self.previous for s in steps):
            return None
        return sum(self.previous[s] for s in steps)

    def record(self, step: str, seconds: float) -> None:
        self.all.setdefault(self.profile, {})[step] = round(seconds, 2)
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
        from kqlib.runs.progress import Progress

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

    def run_eta(self, i: int) -> float | None:
        """Seconds left in the whole run while step ``i`` runs."""
        prev = self.timings.previous.get(self.steps[i])
        rest = self.timings.eta(self.ahead(i + 1))
        if prev is None or rest is None:
            return None
        return max(prev - (time.time() - self.t_step), 0.0) + rest

    def start(self, i: int) -> None:
        from kqlib.runs.progress import fmt_duration

        self.current, self.t_step, self.said_empty = i, time.time(), set()
        self.line(f"{i + 1}/{len(self.steps)} {self.steps[i]}: started "
                  f"(elapsed {fmt_duration(self.bar.elapsed)}, ETA {fmt_duration(self.timings.eta(self.ahead(i)))})")

    def skipped(self, i: int, why: str) -> None:
        self.bar.step()
        self.line(f"{i + 1}/{len(self.steps)} {self.steps[i]}: {why}")

    def done(self, i: int, seconds: float) -> None:
        from kqlib.runs.progress import fmt_duration

        self.timings.record(self.steps[i], seconds)
        self.bar.step()
        self.current = None
        rest = self.timings.eta(self.ahead(i + 1))
        self.line(f"{i + 1}/{len(self.steps)} {self.steps[i]}: done in {seconds:.1f} s "
                  f"(elapsed {fmt_duration(self.bar.elapsed)}, ETA {fmt_duration(rest)})")

    def update(self, record: Mapping[str, Any]) -> None:
        """One update from inside the running chapter (a JSON record of the progress channel)."""
        from kqlib.runs.progress import fmt_duration

        if record.get("event") == "close" or not record.get("text"):
            return
        if not record.get("total"):  # nothing to do (all cached): said once per step name and chapter
            if record.get("desc") in self.said_empty:
                return
            self.said_empty.add(record.get("desc"))
        i = self.current
        where = f"{i + 1}/{len(self.steps)} {self.steps[i]}" if i is not None else "chapter"
        eta = f" | run ETA {fmt_duration(self.run_eta(i))}" if i is not None else ""
        self.line(f"{where} | {record.get('desc')}: {record['text']}{eta}")


class _ChannelTail:
    """A thread that follows the progress channel file while the chapter executes and hands every complete
    JSON line to ``sink``; ``stop()`` reads what is left and joins."""

    def __init__(self, path: Path, sink, every: float = 0.5):
        import threading

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
    from jupyter_client import AsyncKernelManager

    class TrackedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            await super()._async_launch_kernel(kernel_cmd, **kw)
            pgid = getattr(self.provisioner, "pgid", None) or getattr(self.provisioner, "pid", None)
            if pgid:
                _KERNEL_PGIDS.append(int(pgid))

    return TrackedKernelManager


def _kill_kernels(pgids: list[int]) -> None:
    import signal

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
    import jupytext
    import nbformat
    import papermill

    params = dict(parameters) if parameters is not None else parameters_for(chapter, profile, overrides)
    build = root / BUILD
    final = executed_path(root, chapter)
    tmp = build / "tmp" / final.name
    failed = build / "failed" / final.name
    channel = build / "tmp" / f"{chapter.stem}.progress.jsonl"
    for p in (tmp, failed, channel):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.unlink(missing_ok=True)
    inputs_path(final).unlink(missing_ok=True)  # an interrupted run never leaves a matching record behind
    nb = jupytext.read(chapter)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    timeout = int(profile.get("cell_timeout") or 0) or None
    from kqlib.runs.progress import CHANNEL_ENV

    env = {"KQ_BUILD_DIR": str(build), CHANNEL_ENV: str(channel)}
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
        final.unlink(missing_ok=True)
        raise ChapterFailed(_failure_message(chapter, partial, err, root, kept)) from None
    except BaseException:  # Ctrl-C / SIGTERM: stop now, keep nothing half-written
        import logging
        import signal
        import threading

        # a second Ctrl-C must not interrupt the clean-up
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        # nbclient's pending cell task sees the dead kernel later; asyncio would log that as a traceback
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        try:
            _kill_kernels(_KERNEL_PGIDS[n_kernels:])  # nbclient may not have managed to shut it down
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
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
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    if inputs is not None:
        record = dict(inputs, digest=inputs_digest(inputs), executed_at=time.strftime("%Y-%m-%d %H:%M:%S"))
        target = inputs_path(final)
        part = target.with_name(f".{target.name}.tmp")
        part.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(part, target)
    return final


# ------------------------------------------------------------------------------------ resume (inputs)


def inputs_path(executed: Path) -> Path:
    """The input record next to an executed notebook: ``NN_name.inputs.json``."""
    return executed.with_name(executed.stem + ".inputs.json")


def kqlib_digest() -> str:
    """sha256 over kqlib's own source files (``*.py``, ``*.toml`` in every subpackage): any change counts."""
    import hashlib

    h = hashlib.sha256()
    base = Path(__file__).resolve().parents[1]  # the kqlib package
    for path in sorted(list(base.rglob("*.py")) + list(base.rglob("*.toml"))):
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def model_identity(name: str) -> str:
    """What identifies a model's weights without loading it: an embedded model's GGUF sha256, a local
    folder's file names/sizes/mtimes, else the name (a hub id)."""
    import hashlib

    from kqlib.core.models import EMBEDDED

    if name in EMBEDDED:
        try:
            return f"{name}@sha256:{EMBEDDED[name].locate()[1][:16]}"
        except KqError:
            return name
    folder = Path(name)
    if folder.is_dir():
        h = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            st = path.stat()
            h.update(f"{path.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"{name}@files:{h.hexdigest()[:16]}"
    return name


def model_names(params: Mapping[str, Any]) -> list[str]:
    """The model names among a chapter's parameters (``models`` list or ``model`` string)."""
    names: list[str] = []
    for key in ("models", "model"):
        value = params.get(key)
        names += [value] if isinstance(value, str) else [v for v in (value or []) if isinstance(v, str)]
    return names


def check_models(plans) -> None:
    """Refuse, before any chapter runs, a model name or folder no chapter could load."""
    from kqlib.core.models import check_model_name

    for name in dict.fromkeys(n for _, params in plans for n in model_names(params)):
        check_model_name(name)


def chapter_inputs(root: Path, chapter: Path, params: Mapping[str, Any], executor: str = "local") -> dict:
    """Everything a chapter's executed notebook depends on: its source, parameters, kqlib's version and
    source digest, the models' identities and the executor."""
    import hashlib

    from kqlib import __version__

    names = model_names(params)
    return dict(chapter=str(chapter.relative_to(root)),
                source=hashlib.sha256(chapter.read_bytes()).hexdigest()[:16],
                parameters=json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
                kqlib_version=__version__, kqlib_source=kqlib_digest(),
                models={n: model_identity(n) for n in names}, executor=executor)


def inputs_digest(inputs: Mapping[str, Any]) -> str:
    import hashlib

    keys = ("chapter", "source", "parameters", "kqlib_version", "kqlib_source", "models", "executor")
    return hashlib.sha256(json.dumps({k: inputs.get(k) for k in keys}, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def up_to_date(root: Path, chapter: Path, inputs: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the executed notebook of ``chapter`` was made from exactly ``inputs``; and why not."""
    final = executed_path(root, chapter)
    if not final.exists():
        return False, "not executed yet"
    try:
        old = json.loads(inputs_path(final).read_text())
    except (OSError, ValueError):
        return False, "no input record from its last execution"
    if old.get("digest") == inputs_digest(inputs):
        return True, f"unchanged since its execution at {old.get('executed_at', '?')}"
    labels = {"source": "chapter source", "parameters": "parameters", "kqlib_version": "kqlib version",
              "kqlib_source": "kqlib source", "models": "models", "executor": "executor", "chapter": "chapter"}
    changed = [label for k, label in labels.items() if old.get(k) != json.loads(json.dumps(inputs.get(k), default=str))]
    return False, "changed: " + (", ".join(changed) or "input record")


# --------------------------------------------------------------------------------------------- HTML


def mathjax_source() -> Path:
    """MathJax 3's ES5 build inside the ``django-static-mathjax`` package."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.submodule_search_locations:
        src = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
        if (src / "tex-chtml.js").exists():
            return src
    from kqlib.errors import MissingDependencyError

    raise MissingDependencyError("Offline math needs MathJax 3: pip install django-static-mathjax==3.2.2.1")


# bundles the site does not load (it loads tex-chtml.js, which loads fonts/extensions on demand)
_MATHJAX_SKIP = {"tex-svg.js", "tex-svg-full.js", "tex-mml-svg.js", "tex-mml-chtml.js", "mml-chtml.js",
                 "mml-svg.js", "tex-chtml-full.js", "tex-chtml-full-speech.js", "node-main.js"}


def stage(root: Path) -> Path:
    """Make ``_build/executed`` a complete book: config, toc, bib, prose pages, MathJax; check notebooks."""
    dest = root / BUILD / EXECUTED
    dest.mkdir(parents=True, exist_ok=True)
    for path in list(root.glob("*.bib")) + [root / "_config.yml", root / "_toc.yml"]:
        shutil.copy2(path, dest / path.name)
    missing = []
    folders = set()
    for doc in toc_documents(root):
        src = source_of(root, doc)
        folders.add(src.parent)
        if src.suffix == ".py" and not executed_path(root, src).exists():
            missing.append(str(src.relative_to(root)))
    if missing:
        raise ParameterError("Not executed yet (run `kq book` or `kq run CHAPTER` first): " + ", ".join(missing))
    for folder in folders:  # prose pages, images, ... beside the chapters (not the .py sources)
        for path in folder.rglob("*"):
            rel = path.relative_to(root)
            if (path.is_file() and path.suffix not in (".py", ".pyc", ".ipynb")
                    and not any(part.startswith((".", "_")) for part in rel.parts)):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
    mj = dest / MATHJAX_DEST
    if not (mj / "tex-chtml.js").exists():
        shutil.rmtree(mj, ignore_errors=True)
        shutil.copytree(mathjax_source(), mj, ignore=lambda d, names: [n for n in names if n in _MATHJAX_SKIP])
    return dest


def build_html(root: Path) -> Path:
    """``jupyter-book build`` of the staged book; returns ``_build/html/index.html``."""
    src = stage(root)
    from kqlib.book.explorer import prepare_site  # the data downloads, "reproduce this" and the fact explorer

    prepare_site(root, src, notebook_chapters(root))
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(src),
           "--path-output", str(root), "--builder", "html", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (root / BUILD / "html-build.log").write_text(log)
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln]
    for ln in warnings:
        print(f"[kq book] {ln}", flush=True)
    index = root / BUILD / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join(log.strip().splitlines()[-20:])
        raise ChapterFailed(f"The HTML build failed (full log: {BUILD}/html-build.log):\n{tail}")
    return index


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
    from kqlib.book.profiles import declared_parameters

    if "model" in over:
        declared = declared_parameters(chapter)
        if "model" not in declared and "models" in declared:
            value = over.pop("model")
            over["models"] = value if isinstance(value, list) else [value]
    return over


def _common_arguments(p) -> None:
    p.add_argument("--profile", default="cpu", help=f"run profile from kqlib/profiles.toml: {', '.join(profile_names())} "
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
    return {**params, "executor": args.executor or profile.get("executor") or "local",
            "ray_address": args.address or profile.get("address") or None}


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
    """``kq book``: execute every chapter (or ``--only`` ones), then build the HTML."""
    root = find_root(args.root)
    profile = load_profile(args.profile)
    over = _overrides(args)
    chapters = notebook_chapters(root)
    if args.only:
        chapters = [match_chapter(root, p) for p in args.only]
    if args.no_execute:
        chapters = []
    # check every chapter's parameters before running anything; an override goes to the chapters that
    # declare it and must be declared by at least one
    from kqlib.book.profiles import declared_parameters

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
    todo = []
    for ch, params in plans:
        inputs = chapter_inputs(root, ch, params, executor)
        fresh, why = (False, "--force") if args.force else up_to_date(root, ch, inputs)
        todo.append((ch, params, inputs, fresh, why))
    n_run = sum(not fresh for *_, fresh, _ in todo)
    skip = {s for s, (*_, fresh, _) in zip(steps, todo) if fresh}
    progress = RunnerProgress(timings, steps, "kq book", skip=skip)
    from kqlib.runs.progress import fmt_duration

    eta = fmt_duration(timings.eta(progress.ahead(0)))
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
    """``kq run CHAPTER``: execute one chapter with the profile and overrides (no HTML)."""
    root = find_root(args.root)
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
