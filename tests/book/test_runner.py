"""The book runner under real use (``book`` marker: real `kq` subprocesses and kernels on tiny chapters):
Ctrl-C / SIGTERM stop a chapter and a rerun resumes from the attribution cache; live progress from inside
a chapter reaches the terminal but not the page; unchanged chapters are skipped on a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from test_book import _book

TESTS = Path(__file__).resolve().parents[1] / "helpers"

# attributes 12 queries of a tiny random model one by one through the on-disk cache, slowly, and records how
# many it had to compute; the kernel's pid goes to a file so the test can check that the kernel is gone
SLOW_CHAPTER = f'''\
# %% [markdown]
# # Slow attributions

# %% tags=["parameters"]
pause = 0.5
profile = "smoke"

# %%
import json, os, pathlib, sys, time
sys.path.insert(0, {str(TESTS)!r})
build = pathlib.Path(os.environ["KQ_BUILD_DIR"])
(build / "kernel.pid").write_text(str(os.getpid()))
import kqlib.runs.many as B
from tiny import tiny_lm

lm = tiny_lm("llama")
calls = []
_attribute = B.attribute
B.attribute = lambda *a, **k: calls.append(1) or _attribute(*a, **k)
subjects = ["france", "germany", "italy", "england", "spain", "paris", "berlin", "rome", "london", "madrid",
            "city", "country"]
for s in subjects:
    B.attribute_many(lm, [(f"the capital of {{s}} is", "paris")], steps=3, cache=build / "cache", progress=False)
    time.sleep(pause)
(build / "computed.json").write_text(json.dumps(len(calls)))
'''

N_QUERIES = 12


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        [str(TESTS.parents[1])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop("KQ_PROGRESS_FILE", None)
    return env


def _kq(*args, **kw):
    return subprocess.run([sys.executable, "-m", "kqlib.cli", *args], capture_output=True, text=True,
                          timeout=600, env=_env(), **kw)


def _cached(root: Path) -> int:
    return len([p for p in (root / "_build" / "cache").rglob("*.pt") if not p.name.startswith(".")])  # not .tmp-*


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _interrupt(root: Path, sig: int, at_least: int) -> tuple[int, str, int]:
    """Start `kq run 01`, send ``sig`` once ``at_least`` more queries are cached; (exit status, output, cached)."""
    before = _cached(root)
    (root / "_build" / "kernel.pid").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "kqlib.cli", "run", "01", "--root", str(root), "--profile",
                             "smoke"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            # as in a terminal: SIGINT is not ignored (a background job of a script would ignore it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while _cached(root) < before + at_least:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "the chapter made no progress"
        time.sleep(0.2)
    kernel = int((root / "_build" / "kernel.pid").read_text())
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)  # generous: a loaded machine; the point is that it stops
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"`kq run` did not stop on signal {sig}: {proc.communicate()[0]}")
    for _ in range(50):
        if not _alive(kernel):
            break
        time.sleep(0.2)
    assert not _alive(kernel), f"the chapter's kernel {kernel} survived signal {sig}"
    return proc.returncode, out, _cached(root)


@pytest.mark.book
def test_sigterm_and_ctrl_c_stop_the_chapter_and_a_rerun_resumes(tmp_path):
    root = _book(tmp_path, {"01_slow.py": SLOW_CHAPTER})
    executed = root / "_build" / "executed" / "book" / "01_slow.ipynb"

    status, out, cached_1 = _interrupt(root, signal.SIGTERM, at_least=2)
    assert status == 143, out
    assert "interrupted by SIGTERM" in out and "Traceback" not in out
    assert not list((root / "_build" / "tmp").glob("*.ipynb")), "a half-written notebook was left behind"
    assert not executed.exists() and cached_1 < N_QUERIES

    status, out, cached_2 = _interrupt(root, signal.SIGINT, at_least=2)
    assert status == 130, out
    assert "Ctrl-C" in out and "Traceback" not in out
    assert not list((root / "_build" / "tmp").glob("*.ipynb")) and not executed.exists()
    assert cached_1 < cached_2 < N_QUERIES
    assert not executed.with_name("01_slow.inputs.json").exists()  # an interrupted chapter is never "up to date"

    r = _kq("run", "01", "--root", str(root), "--profile", "smoke", "-p", "pause=0.0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert executed.exists()
    computed = json.loads((root / "_build" / "computed.json").read_text())
    assert computed == N_QUERIES - cached_2  # what finished before the interruptions is not recomputed
    # `kq book` after `kq run` with the same inputs: the chapter is up to date
    r = _kq("book", "--root", str(root), "--profile", "smoke", "--no-html", "-p", "pause=0.0")
    assert r.returncode == 0 and "1/1 book/01_slow.py: skipped, unchanged" in r.stdout, r.stdout + r.stderr


PROGRESS_CHAPTER = '''\
# %% [markdown]
# # Progress

# %% tags=["parameters"]
n_items = 6
profile = "smoke"

# %%
import time
from kqlib.runs.progress import Progress

bar = Progress(n_items, "demo items", "item", every=0)
for i in range(n_items):
    time.sleep(0.3)
    bar.step()
bar.close()
print("items done")
'''

PLAIN_CHAPTER = '''\
# %% [markdown]
# # Plain

# %% tags=["parameters"]
profile = "smoke"

# %%
print("plain chapter")
'''


@pytest.mark.book
def test_live_progress_and_resume(tmp_path):
    root = _book(tmp_path, {"01_progress.py": PROGRESS_CHAPTER, "02_plain.py": PLAIN_CHAPTER})
    ex1 = root / "_build" / "executed" / "book" / "01_progress.ipynb"
    ex2 = root / "_build" / "executed" / "book" / "02_plain.ipynb"

    r = _kq("book", "--root", str(root), "--profile", "smoke", "--no-html")
    assert r.returncode == 0, r.stdout + r.stderr
    live = [ln for ln in r.stdout.splitlines() if "demo items:" in ln]
    assert live, r.stdout
    assert all(ln.startswith("[kq book] 1/2 book/01_progress.py | demo items:") for ln in live)
    assert any("6/6" in ln for ln in live) and any("ETA unknown" in ln for ln in live)
    assert any("s/item" in ln or "items/s" in ln for ln in live)
    measured = [ln for ln in live if "/6 " in ln and "ETA unknown" not in ln.split("|")[1]]
    assert measured, live  # an ETA from measured item times once a few items are done
    assert all("run ETA" in ln for ln in live)
    # the page keeps only the chapter's own output
    text = json.dumps([c.get("outputs", []) for c in nbformat.read(ex1, as_version=4).cells])
    assert "items done" in text and "demo items" not in text and "ETA" not in text
    record = json.loads(ex1.with_name("01_progress.inputs.json").read_text())
    assert record["parameters"] == {"profile": "smoke"} and record["digest"] and record["kqlib_source"]

    # rerun: nothing changed, nothing runs
    mtimes = (ex1.stat().st_mtime_ns, ex2.stat().st_mtime_ns)
    r = _kq("book", "--root", str(root), "--profile", "smoke", "--no-html")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("skipped, unchanged") == 2 and "demo items:" not in r.stdout
    assert (ex1.stat().st_mtime_ns, ex2.stat().st_mtime_ns) == mtimes

    # a changed chapter source re-executes that chapter only; a changed parameter likewise
    src = root / "book" / "02_plain.py"
    src.write_text(src.read_text().replace('print("plain chapter")', 'print("plain chapter, edited")'))
    r = _kq("book", "--root", str(root), "--profile", "smoke", "--no-html")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1/2 book/01_progress.py: skipped" in r.stdout and "chapter source" in r.stdout
    assert ex1.stat().st_mtime_ns == mtimes[0] and ex2.stat().st_mtime_ns != mtimes[1]
    assert "plain chapter, edited" in json.dumps(nbformat.read(ex2, as_version=4).cells)
    r = _kq("book", "--root", str(root), "--profile", "smoke", "--no-html", "-p", "n_items=3")
    assert r.returncode == 0 and "parameters" in r.stdout and "3/3" in r.stdout, r.stdout + r.stderr

    # --force re-executes an unchanged chapter
    before = ex2.stat().st_mtime_ns
    r = _kq("book", "--root", str(root), "--profile", "smoke", "--no-html", "--only", "02", "--force")
    assert r.returncode == 0 and "skipped" not in r.stdout, r.stdout + r.stderr
    assert ex2.stat().st_mtime_ns != before
