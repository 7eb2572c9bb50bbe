"""Fault tour: replay the cases of the book-pipeline fault tour (stale, mixed or lost results; damaged files; bad
API input) and print each outcome. Each case ends in OK (the correct result, or kqlib's own clear message) or
WRONG (what happened instead); the exit status is the number of WRONG cases.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/fault_tour.py [--only WORD] [--skip-model]

The book cases run real ``kq`` commands (``python -m kqlib.cli``) with real kernels on a small synthetic book in
a temporary folder (a "measure" chapter that writes results and tidy data, a scorecard chapter that reads every
chapter's results), and the parameter cases on a copy of the book's own chapter sources. ``--skip-model`` leaves
out the one case that loads the embedded SmolLM2 (``kq attribute`` with its cache on a full disk).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"  # the replayed cases reuse the tests' helpers and fixtures (tests/<folder>/)
for _folder in sorted(p for p in TESTS.iterdir() if p.is_dir()):
    sys.path.insert(0, str(_folder))
sys.path.insert(0, str(REPO))

MEASURE = '''\
# %% tags=["parameters"]
synapse_t = 0.2
relations = ["P36"]
pause = 0.0
fail = False
profile = "smoke"

# %%
import time
import pandas as pd
from kqlib.book import report
from kqlib.book.site.data_export import write_table

time.sleep(pause)
write_table("04_measure", "kn_sizes", pd.DataFrame({"t": [synapse_t], "mean_size": [10 / (1 + 10 * synapse_t)]}))
if fail:
    raise ValueError("boom: a failing run")
report.write_results("04_measure", {"synapse_t": synapse_t}, {"parameters": {"synapse_t": synapse_t}})
'''

SCORECARD = '''\
# %% tags=["parameters"]
profile = "smoke"

# %%
from kqlib.book import report
from kqlib.book.claims import scorecard

seen = {stem: r["numbers"] for stem, r in scorecard.chapter_results(report.results_dir()).items()
        if stem != "99_scorecard"}
report.write_results("99_scorecard", {"seen": seen}, {})
'''


class Tour:
    def __init__(self, work: Path):
        self.work = work
        self.rows: list[tuple[str, bool, str]] = []
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.env.pop("KQ_BUILD_DIR", None)
        self.env.pop("KQ_OUTPUT_DIR", None)

    def case(self, name: str, fn) -> None:
        t0 = time.time()
        try:
            ok, outcome = fn()
        except Exception as exc:  # noqa: BLE001 - a case that crashes the tour is WRONG, with its traceback
            ok, outcome = False, "tour crashed: " + "".join(traceback.format_exception_only(exc)).strip()
        self.rows.append((name, ok, outcome))
        print(f"{'OK   ' if ok else 'WRONG'} {name} ({time.time() - t0:.0f} s)\n      {outcome}", flush=True)

    # ---------------------------------------------------------------------------------- helpers

    def book(self, name: str, chapters: dict[str, str]) -> Path:
        from test_book import _book

        folder = self.work / name
        folder.mkdir()
        return _book(folder, chapters)

    def kq(self, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kqlib.cli", *map(str, args)], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout, cwd=self.work)

    @staticmethod
    def results(root: Path, stem: str) -> dict:
        return json.loads((root / "_build" / "results" / f"{stem}.json").read_text())["numbers"]

    @staticmethod
    def said(proc) -> str:
        text = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return (text[0] if text else "(nothing)")[:300]


# ------------------------------------------------------------------------------------------- cases


def book_cases(t: Tour) -> None:
    root = t.book("stale", {"04_measure.py": MEASURE, "99_scorecard.py": SCORECARD})
    common = ["--root", root, "--profile", "smoke"]

    def stale_scorecard():
        first = t.kq("book", *common, "--no-html")
        second = t.kq("book", *common, "--no-html", "-p", "synapse_t=0.5")
        seen = t.results(root, "99_scorecard")["seen"]["04_measure"]["synapse_t"]
        ok = first.returncode == second.returncode == 0 and seen == 0.5
        line = next((ln for ln in second.stdout.splitlines() if "99_scorecard" in ln and "executing" in ln), "?")
        return ok, f"chapter 04 at synapse_t=0.5; the scorecard re-executed ({line.strip()}) and shows {seen}"

    def changed_pararel():
        source = REPO.parent / "shared" / "data" / "pararel"
        copy = t.work / "pararel-copy"
        shutil.copytree(source, copy)
        env = {"KQLIB_PARAREL": str(copy)}
        t.kq("book", *common, "--no-html", "-p", "synapse_t=0.5", env=env)
        with open(copy / "tuples" / "P36.jsonl", "a") as f:
            f.write('{"sub_label": "Atlantis", "obj_label": "Poseidonia"}\n')
        proc = t.kq("book", *common, "--no-html", "-p", "synapse_t=0.5", env=env)
        head = next((ln for ln in proc.stdout.splitlines() if "chapter(s) to execute" in ln), "?")
        why = next((ln for ln in proc.stdout.splitlines() if "ParaRel" in ln), "?")
        return proc.returncode == 0 and "2 of 2 chapter(s)" in head, f"{head.strip()} / {why.strip()}"

    def two_writers():
        slow = subprocess.Popen([sys.executable, "-m", "kqlib.cli", "run", "04", *map(str, common), "-p", "pause=20",
                                 "-p", "synapse_t=0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=t.env, cwd=t.work)
        try:
            lock_holder = root / "_build" / ".lock.holder"
            for _ in range(100):
                if lock_holder.exists():
                    break
                time.sleep(0.1)
            second = t.kq("run", "04", *common, "-p", "synapse_t=0.3")
        finally:
            slow.terminate()
            slow.communicate(timeout=60)
        ok = second.returncode == 75 and f"pid {slow.pid}" in second.stderr
        return ok, f"second `kq run 04` exit {second.returncode}: {t.said(second)}"

    def only_dedup():
        proc = t.kq("book", *common, "--no-html", "--only", "04", "--only", "04_measure", "--force")
        runs = sum("04_measure.py: done" in ln for ln in proc.stdout.splitlines())
        return proc.returncode == 0 and runs == 1, f"exit {proc.returncode}; chapter 04 executed {runs} time(s)"

    def failed_run_keeps_last_good():
        t.kq("book", *common, "--no-html")
        build = root / "_build"
        keep = [build / "executed" / "book" / "04_measure.ipynb", build / "executed" / "book" / "04_measure.inputs.json",
                build / "results" / "04_measure.json", build / "data" / "04_measure" / "kn_sizes.csv"]
        before = {p: p.read_bytes() for p in keep}
        proc = t.kq("run", "04", *common, "-p", "fail=True", "-p", "synapse_t=0.9")
        same = all(p.exists() and p.read_bytes() == before[p] for p in keep)
        return proc.returncode == 1 and same, (f"exit {proc.returncode} ({t.said(proc)[:80]}); last good notebook, "
                                               f"record, results and data {'kept' if same else 'LOST or changed'}")

    def interrupted_run_keeps_last_good():
        import signal

        build = root / "_build"
        keep = [build / "executed" / "book" / "04_measure.ipynb", build / "results" / "04_measure.json"]
        before = {p: p.read_bytes() for p in keep}
        proc = subprocess.Popen([sys.executable, "-m", "kqlib.cli", "run", "04", *map(str, common), "-p", "pause=30",
                                 "-p", "synapse_t=0.7"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=t.env, cwd=t.work)
        time.sleep(8)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
        same = all(p.exists() and p.read_bytes() == before[p] for p in keep)
        return proc.returncode == 130 and same, f"exit {proc.returncode}; last good outputs {'kept' if same else 'LOST'}"

    def second_writer_mix_detected():
        t.kq("book", *common, "--no-html")
        table = root / "_build" / "data" / "04_measure" / "kn_sizes.csv"
        table.write_text("t,mean_size\n0.1,5.0\n")  # another run's table beside this run's notebook
        proc = t.kq("book", *common, "--no-html")
        why = next((ln for ln in proc.stdout.splitlines() if "04_measure" in ln and "executing" in ln), "not re-executed")
        return proc.returncode == 0 and "changed" in why, why.strip()

    def damaged_results():
        t.kq("book", *common, "--no-html")
        path = root / "_build" / "results" / "04_measure.json"
        path.write_text(path.read_text()[:30])
        direct = t.kq("run", "99", *common)
        book = t.kq("book", *common, "--no-html")
        redo = "04_measure.py: executing" in book.stdout
        ok = direct.returncode != 0 and "04_measure.json" in direct.stderr and "kq run 04" in direct.stderr and redo
        tail = [ln for ln in direct.stderr.splitlines() if "DataError" in ln]
        return ok, (f"`kq run 99`: {(tail[0] if tail else t.said(direct))[:200]}; `kq book` re-executed 04: {redo}")

    def empty_record():
        t.kq("book", *common, "--no-html")
        (root / "_build" / "executed" / "book" / "04_measure.inputs.json").write_text("[]")
        proc = t.kq("book", *common, "--no-html")
        why = next((ln for ln in proc.stdout.splitlines() if "damaged input record" in ln), "")
        return proc.returncode == 0 and bool(why), f"exit {proc.returncode}: {why.strip() or t.said(proc)}"

    def bad_timings():
        (root / "_build" / "timings.json").write_text('{"smoke": [1, 2]}')
        proc = t.kq("book", *common, "--no-html")
        note = next((ln for ln in proc.stderr.splitlines() if "timings.json" in ln), "")
        return proc.returncode == 0 and "damaged" in note and "rewritten" in note, f"exit {proc.returncode}: {note.strip()[:200]}"

    def wrong_shape_results_in_html():
        t.kq("book", *common, "--no-html")
        (root / "_build" / "results" / "04_measure.json").write_text('["wrong", "shape"]')
        proc = t.kq("book", *common, "--no-execute")
        ok = proc.returncode == 2 and "04_measure.json holds a list" in proc.stderr and "Traceback" not in proc.stderr
        return ok, f"exit {proc.returncode}: {t.said(proc)}"

    def stale_html():
        t.kq("book", *common, "--no-html")
        t.kq("run", "04", *common, "-p", "synapse_t=0.35")
        proc = t.kq("book", *common, "--no-execute")
        return proc.returncode == 2 and "99_scorecard: results of 04_measure changed" in proc.stderr, t.said(proc) + \
            " / " + " ".join(proc.stderr.strip().splitlines()[1:])[:200]

    for name, fn in [("stale scorecard: kq book -p synapse_t=0.5", stale_scorecard),
                     ("kq run 04, then only the HTML build (kq book --no-execute)", stale_html),
                     ("changed ParaRel data (KQLIB_PARAREL)", changed_pararel),
                     ("two writers on one _build", two_writers),
                     ("--only 04 --only 04_measure", only_dedup),
                     ("a failed kq run keeps the last good outputs", failed_run_keeps_last_good),
                     ("an interrupted kq run keeps the last good outputs", interrupted_run_keeps_last_good),
                     ("another run's data beside a chapter's notebook", second_writer_mix_detected),
                     ("a truncated results file", damaged_results),
                     ("inputs.json holding []", empty_record),
                     ("timings.json of the wrong shape", bad_timings),
                     ("a results JSON of the wrong shape in the HTML build", wrong_shape_results_in_html)]:
        t.case(name, fn)


def parameter_cases(t: Tour) -> None:
    names = ["01_kl_reexamination.py", "05_cas_editing.py"]
    root = t.book("params", {n: (REPO / "book" / n).read_text() for n in names})
    for param in ("static_threshold=30", "n_boot=0", "lambda2=-1.0", "cs_kind='cs3'"):
        def check(param=param):
            proc = t.kq("book", "--root", root, "--profile", "smoke", "--no-html", "-p", param)
            executed = (root / "_build" / "executed").exists() and any((root / "_build" / "executed").rglob("*.ipynb"))
            return proc.returncode == 2 and not executed and param.split("=")[0] in proc.stderr, t.said(proc)
        t.case(f"-p {param}", check)


def claims_cases(t: Tour) -> None:
    from kqlib.book.claims import verdicts as V
    from kqlib.errors import KqError

    original = (REPO / "kqlib" / "book" / "claims" / "claims.toml").read_text()
    for label, old, new in [("a typo in a claim's chapter", 'chapter = "04_dynamic_kn_selection"',
                             'chapter = "04_dynamic_kn_selectoin"'),
                            ("a claim without quantity", "quantity = ", "quantityy = ")]:
        def check(old=old, new=new):
            path = t.work / "claims.toml"
            path.write_text(original.replace(old, new, 1))
            saved = V.CLAIMS_FILE
            V.CLAIMS_FILE = path
            V._load.cache_clear()
            try:
                V.claims()
                return False, "loaded without complaint"
            except KqError as exc:
                return "claim '" in str(exc) and "field" in str(exc), str(exc)[:300]
            finally:
                V.CLAIMS_FILE = saved
                V._load.cache_clear()
        t.case(f"claims.toml: {label}", check)


def edit_cases(t: Tour) -> None:
    def resume():
        import torch

        from kqlib.paper import edit_loop
        from test_edit_cache import _plans, _run
        from tiny import tiny_lm

        torch.manual_seed(0)
        lm = tiny_lm("llama")
        plans, firsts = _plans(lm)
        calls = []
        real = edit_loop.editing.evaluate_edit
        edit_loop.editing.evaluate_edit = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            _run(lm, plans, firsts, t.work / "edits")
            first = len(calls)
            _run(lm, plans, firsts, t.work / "edits")
        finally:
            edit_loop.editing.evaluate_edit = real
        return first > 0 and len(calls) == first, f"first run evaluated {first} edits, the rerun {len(calls) - first}"

    t.case("edits are cached by content (chapter 05 resumes)", resume)


def api_cases(t: Tour, with_model: bool) -> None:
    import torch

    import kqlib
    from kqlib.errors import KqError
    from tiny import tiny_lm

    lm = tiny_lm("llama")
    long = " ".join(["the capital of france is"] * 40)
    calls = {
        "prompt=None": lambda: kqlib.attribute(lm, None, "paris"),
        "prompt=123": lambda: kqlib.attribute(lm, 123, "paris"),
        'memory_budget="1GB"': lambda: kqlib.attribute(lm, "the capital of france is", "paris", memory_budget="1GB"),
        "AMIG baseline of the wrong shape": lambda: kqlib.attribute(lm, "the capital of france is", "paris",
                                                                     method="amig", baseline=torch.zeros(3, 7)),
        'load(dtype="float17")': lambda: kqlib.load("smollm2-135m", dtype="float17"),
        'knowledge_neurons(s, t="0.2")': lambda: kqlib.knowledge_neurons(torch.rand(2, 3), t="0.2"),
        "a prompt longer than the model's positions inside attribute_many": lambda: kqlib.attribute_many(
            lm, [("the capital of france is", "paris"), (long, "paris")], use_cache=False, progress=False),
    }
    for name, call in calls.items():
        def check(call=call):
            try:
                call()
                return False, "no error"
            except KqError as exc:
                return True, f"{type(exc).__name__}: {str(exc)[:200]}"
        t.case(f"API: {name}", check)

    def full_disk():
        from kqlib import cli
        import kqlib.runs.cache as C

        class FullOs:  # the cache module's os: writes of cache entries hit a full disk
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def fdopen(fd, mode):
                f = os.fdopen(fd, mode)

                class Full:
                    def __enter__(self):
                        return self

                    def __exit__(self, *exc):
                        f.close()

                    def write(self, data):
                        f.write(data[: len(data) // 2])
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return Full()

        cache = t.work / "full-cache"
        real = C.os
        C.os = FullOs()
        try:
            import io
            from contextlib import redirect_stderr

            err = io.StringIO()
            with redirect_stderr(err):
                status = cli.main(["attribute", "--model", "smollm2-135m", "--relation", "P103", "--facts", "1",
                                   "--steps", "2", "--cache", str(cache), "--out", str(t.work / "kn.csv")])
        finally:
            C.os = real
        partial = [p.name for p in cache.rglob("*") if p.is_file()]
        line = next((ln for ln in err.getvalue().splitlines() if ln.startswith("kq attribute")), "?")
        return status == 2 and "full" in line and not partial, f"exit {status}: {line[:250]}; files left: {partial}"

    if with_model:
        t.case("kq attribute with its cache on a full disk", full_disk)


def explorer_cases(t: Tour) -> None:
    from test_explorer_js import GOOD, _show, _written

    for label, text in [("truncated", lambda d: _written(d, GOOD)[:-40]),
                        ("malformed entry", lambda d: _written(d, {**GOOD, "facts": [{"model": "m"}]}))]:
        def check(text=text, label=label):
            folder = t.work / f"explorer-{label.split()[0]}"
            folder.mkdir()
            shown = _show(folder, text(folder))
            return "explorer-data.js" in shown["text"] and "No facts" not in shown["text"], shown["text"][:200]
        t.case(f"explorer-data.js {label}", check)

    def chromium_waits():
        import test_browser

        return "DPkg::Lock::Timeout=600" in test_browser.APT_GET, " ".join(test_browser.APT_GET) + " install -y chromium"

    t.case("the chromium fixture waits for the dpkg lock", chromium_waits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run only the groups whose name contains this word: book, params, claims, edits, "
                                   "api, explorer")
    ap.add_argument("--skip-model", action="store_true", help="leave out the case that loads SmolLM2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kq-fault-tour-") as tmp:
        t = Tour(Path(tmp))
        groups = {"book": lambda: book_cases(t), "params": lambda: parameter_cases(t),
                  "claims": lambda: claims_cases(t), "edits": lambda: edit_cases(t),
                  "api": lambda: api_cases(t, not args.skip_model), "explorer": lambda: explorer_cases(t)}
        for name, run in groups.items():
            if not args.only or args.only in name:
                print(f"== {name}", flush=True)
                run()
        wrong = [name for name, ok, _ in t.rows if not ok]
        print(f"\n{len(t.rows) - len(wrong)} of {len(t.rows)} cases OK" + (f"; WRONG: {', '.join(wrong)}" if wrong else ""))
        return len(wrong)


if __name__ == "__main__":
    sys.exit(main())
