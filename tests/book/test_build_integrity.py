"""The book never publishes stale, mixed or lost results: a chapter's recorded inputs include the data it reads
(ParaRel files, other chapters' results), one writer per build, outputs published only when a chapter finished,
parameters checked against their declared ranges, damaged records named.

Most tests replace the papermill execution by a fake that writes what a chapter writes (its results JSON and
tidy data, staged, then published by the runner), so the runner's planning is tested without kernels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kqlib import cli
from kqlib.book.run import runner
from kqlib.book.profiles import VALUE_RULES, declared_parameters, load_profile, parameters_for
from kqlib.errors import ParameterError

from test_book import _book

REPO = Path(__file__).resolve().parents[2]
PARAREL = REPO.parent / "shared" / "data" / "pararel"

MEASURE = '''\
# %% tags=["parameters"]
synapse_t = 0.2
relations = ["P36"]
profile = "smoke"

# %%
print(synapse_t)
'''

SCORECARD = '''\
# %% tags=["parameters"]
profile = "smoke"

# %%
from kqlib.book import report
rows = report.results_dir()
'''


@pytest.fixture
def fake_execution(monkeypatch):
    """Replace the kernel: 'executing' a chapter writes results {params, seen: results of the others} and a
    data table into the staging folder, then the runner publishes them. Returns the list of executed stems."""
    calls: list[str] = []

    def execute(root, chapter, profile, overrides=None, parameters=None, progress=None, inputs=None):
        build = root / runner.BUILD
        staged = build / "tmp" / f"{chapter.stem}.out"
        results = staged / "results" / f"{chapter.stem}.json"
        results.parent.mkdir(parents=True, exist_ok=True)
        seen = {p.stem: json.loads(p.read_text()).get("numbers") for p in sorted((build / "results").glob("*.json"))
                if p.stem != chapter.stem}
        results.write_text(json.dumps({"chapter": chapter.stem, "numbers": {"params": dict(parameters or {}),
                                                                           "seen": seen}, "run": {}}))
        (staged / "data" / chapter.stem).mkdir(parents=True, exist_ok=True)
        (staged / "data" / chapter.stem / "t.csv").write_text(f"x\n{len(calls)}\n")
        notebook = build / "tmp" / f"{chapter.stem}.ipynb"
        notebook.write_text("{}")
        runner.publish(root, chapter, notebook, staged, inputs)
        calls.append(chapter.stem)
        return runner.executed_path(root, chapter)

    monkeypatch.setattr(runner, "execute_chapter", execute)
    return calls


def _root(tmp_path):
    return _book(tmp_path, {"04_measure.py": MEASURE, "99_scorecard.py": SCORECARD})


def _kq(root, *args):
    return cli.main(["book", "--root", str(root), "--profile", "smoke", "--no-html", *args])


def _results(root, stem):
    return json.loads((root / "_build" / "results" / f"{stem}.json").read_text())["numbers"]


def test_a_changed_parameter_re_executes_the_scorecard(tmp_path, fake_execution, capsys):
    root = _root(tmp_path)
    assert _kq(root) == 0 and fake_execution == ["04_measure", "99_scorecard"]
    assert _kq(root) == 0 and fake_execution == ["04_measure", "99_scorecard"]  # nothing changed: both skipped
    assert _kq(root, "-p", "synapse_t=0.5") == 0
    assert fake_execution[2:] == ["04_measure", "99_scorecard"]
    # the scorecard saw chapter 04's new results, not the old ones
    assert _results(root, "99_scorecard")["seen"]["04_measure"]["params"]["synapse_t"] == 0.5
    out = capsys.readouterr().out
    assert "results of 04_measure" in out
    # `kq run 04` alone, then `kq book`: the scorecard's recorded input (04's results) changed
    assert cli.main(["run", "04", "--root", str(root), "--profile", "smoke", "-p", "synapse_t=0.3"]) == 0
    assert _kq(root, "-p", "synapse_t=0.3") == 0
    assert fake_execution[-2:] == ["04_measure", "99_scorecard"]
    assert "changed: results of 04_measure" in capsys.readouterr().out
    # --only 04 with the HTML build takes the scorecard along (here: HTML skipped, so it is not)
    assert _kq(root, "--only", "04", "--force", "-p", "synapse_t=0.4") == 0
    assert fake_execution[-1] == "04_measure"


def test_only_values_are_deduplicated(tmp_path, fake_execution):
    root = _root(tmp_path)
    assert _kq(root, "--only", "04", "--only", "04_measure", "--force") == 0
    assert fake_execution == ["04_measure"]


def test_changed_pararel_files_re_execute_the_chapter(tmp_path, fake_execution, monkeypatch, capsys):
    if not (PARAREL / "patterns" / "P36.jsonl").exists():
        pytest.skip("no ParaRel checkout beside the repository")
    root = _root(tmp_path)
    copy = tmp_path / "pararel"
    shutil.copytree(PARAREL, copy)
    monkeypatch.setenv("KQLIB_PARAREL", str(copy))
    assert _kq(root, "--only", "04") == 0 and fake_execution == ["04_measure"]
    assert _kq(root, "--only", "04") == 0 and fake_execution == ["04_measure"]  # unchanged
    record = json.loads((root / "_build" / "executed" / "book" / "04_measure.inputs.json").read_text())
    assert record["pararel"]["dir"] == str(copy.resolve())
    with open(copy / "tuples" / "P36.jsonl", "a") as f:
        f.write('{"sub_label": "Atlantis", "obj_label": "Poseidonia"}\n')
    assert _kq(root, "--only", "04") == 0 and fake_execution == ["04_measure", "04_measure"]
    assert "changed: ParaRel data" in capsys.readouterr().out


def test_outputs_rewritten_by_another_run_re_execute_the_chapter(tmp_path, fake_execution, capsys):
    root = _root(tmp_path)
    assert _kq(root) == 0
    (root / "_build" / "data" / "04_measure" / "t.csv").write_text("x\n99\n")  # another run's table
    assert _kq(root) == 0 and fake_execution[2:] == ["04_measure", "99_scorecard"]
    assert "results or data files changed" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["[]", "{trunc", ""])
def test_a_damaged_input_record_is_named_and_the_chapter_re_executed(tmp_path, fake_execution, capsys, content):
    root = _root(tmp_path)
    assert _kq(root) == 0
    record = root / "_build" / "executed" / "book" / "04_measure.inputs.json"
    record.write_text(content)
    assert _kq(root) == 0 and fake_execution[2:] == ["04_measure", "99_scorecard"]
    out = capsys.readouterr().out
    assert "damaged input record" in out and "04_measure.inputs.json" in out
    assert json.loads(record.read_text())["digest"]


# ------------------------------------------------------------------------------------- one writer


HOLD = textwrap.dedent('''\
    import sys, time
    from kqlib.book.run.lock import build_lock
    with build_lock(sys.argv[1], command="kq run 01 -p t_threshold=0.1"):
        print("held", flush=True)
        time.sleep(60)
''')


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path, capsys, fake_execution):
    root = _root(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root / "_build")], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(["run", "04", "--root", str(root), "--profile", "smoke"]) == 75
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "kq run 01 -p t_threshold=0.1" in err and "started at" in err
        assert _kq(root) == 75
        assert fake_execution == []
    finally:
        holder.kill()
        holder.wait()
    assert _kq(root) == 0 and fake_execution == ["04_measure", "99_scorecard"]  # the lock died with its holder


# --------------------------------------------------------------------------------- declared parameters


def test_every_book_parameter_has_a_declared_range():
    for chapter in sorted((REPO / "book").glob("0*.py")):
        missing = sorted(set(declared_parameters(chapter)) - set(VALUE_RULES))
        assert not missing, f"{chapter.name}: {missing} have no rule in kqlib.book.profiles.VALUE_RULES"


@pytest.mark.parametrize("name,value,expect", [
    ("static_threshold", 30, "must be in [0, 1]"), ("n_boot", 0, "must be >= 1"), ("synapse_t", 1.5, "[0, 1)"),
    ("t_grid", [0.1, 20.0], "[0, 1)"), ("cs_kind", "cs3", "one of cs1, cs2, pairwise"), ("n_queries", 0, ">= 1")])
def test_out_of_range_parameters_are_refused_before_any_chapter_runs(tmp_path, fake_execution, capsys, name,
                                                                      value, expect):
    chapter = next(p for p in sorted((REPO / "book").glob("0*.py")) if name in declared_parameters(p))
    with pytest.raises(ParameterError) as err:
        parameters_for(chapter, "smoke", {name: value})
    assert f"Parameter {name}=" in str(err.value) and expect in str(err.value)
    root = _book(tmp_path, {chapter.name: chapter.read_text()})
    assert _kq(root, "-p", f"{name}={value!r}") == 2 and fake_execution == []
    assert expect in capsys.readouterr().err


def test_values_valid_alone_but_not_together_are_refused_and_every_profile_agrees():
    """site_relations outside relations would make the site comparison compare nothing, silently (the cpu
    profile had that after its relations changed); edit_method must be one of the attributed methods."""
    violins = REPO / "book" / "02_consistency_violins.py"
    with pytest.raises(ParameterError, match=r"site_relations \['P103'\] not among relations"):
        parameters_for(violins, "cpu", {"site_relations": ["P103"]})
    with pytest.raises(ParameterError, match="site_methods"):
        parameters_for(violins, "smoke", {"site_methods": ["sig"], "methods": ["ig"]})
    with pytest.raises(ParameterError, match="edit_method 'amig' must be one of methods"):
        parameters_for(REPO / "book" / "01_kl_reexamination.py", "smoke", {"edit_method": "amig", "methods": ["ig"]})
    assert parameters_for(violins, "smoke", {"relations": []})["site_relations"] == ["P103"]  # [] = every relation
    for profile in ("smoke", "cpu", "paper"):
        for chapter in sorted((REPO / "book").glob("[0-9]*.py")):
            parameters_for(chapter, profile)  # every shipped combination is consistent


def test_a_profile_key_without_a_declared_range_is_refused(monkeypatch, tmp_path):
    from kqlib.book import profiles

    bad = tmp_path / "profiles.toml"
    bad.write_text('[profile.x]\nstatic_treshold = 0.3\n')
    monkeypatch.setattr(profiles, "PROFILES_FILE", bad)
    with pytest.raises(ParameterError, match="static_treshold.*not a known parameter"):
        load_profile("x")
    bad.write_text('[profile.x]\n[profile.x.chapters."01"]\nn_boot = 0\n')
    with pytest.raises(ParameterError, match="n_boot=0.*must be >= 1"):
        load_profile("x")


def test_the_chromium_fixture_waits_for_the_dpkg_lock(monkeypatch):
    """Another apt-get holding the dpkg lock must not fail the browser tests at once."""
    import test_browser

    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(test_browser.subprocess, "run", run)
    test_browser._install_chromium()
    assert [c[c.index("install") if "install" in c else -1] for c in seen] == ["update", "install"]
    assert all(c[:3] == ["apt-get", "-o", "DPkg::Lock::Timeout=600"] for c in seen), seen


def test_the_html_build_refuses_a_scorecard_older_than_the_results(tmp_path, fake_execution, capsys, monkeypatch):
    root = _root(tmp_path)
    assert _kq(root) == 0
    assert cli.main(["run", "04", "--root", str(root), "--profile", "smoke", "-p", "synapse_t=0.3"]) == 0
    built = []
    monkeypatch.setattr(runner, "build_html", lambda root: built.append(root) or root / "index.html")
    assert cli.main(["book", "--root", str(root), "--profile", "smoke", "--no-execute"]) == 2
    err = capsys.readouterr().err
    assert "99_scorecard: results of 04_measure changed" in err and "kq book --only 99" in err and not built
    assert cli.main(["book", "--root", str(root), "--profile", "smoke", "--only", "99"]) == 0
    assert cli.main(["book", "--root", str(root), "--profile", "smoke", "--no-execute"]) == 0 and len(built) == 2
