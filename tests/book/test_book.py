"""The book pipeline: profiles and parameters (fast), chapter execution and the HTML build (``book``)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from kqlib import cli
from kqlib.book.run.runner import ChapterFailed, execute_chapter, notebook_chapters, toc_documents
from kqlib.errors import ParameterError
from kqlib.book.report import read_glued
from kqlib.book.profiles import (declared_parameters, load_profile, parameters_for, parse_overrides, parse_value,
                            profile_names)

REPO = Path(__file__).resolve().parents[2]

CHAPTER = '''\
# %% [markdown]
# # A test chapter

# %% tags=["parameters"]
models = ["smollm2-135m"]
n_facts_per_relation = 10
relations = []
steps = 20
methods = ["ig"]
t_threshold = 0.2
seed = 0
profile = "smoke"

# %%
print("steps", steps)
'''


def _chapter(tmp_path: Path, body: str = CHAPTER, name: str = "01_test.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def _book(tmp_path: Path, chapters: dict[str, str]) -> Path:
    """A minimal book in tmp_path: config, bib, intro and the given chapters (name -> source)."""
    root = tmp_path / "bookroot"
    (root / "book").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copy(REPO / "references.bib", root / "references.bib")
    shutil.copy(REPO / "book" / "intro.md", root / "book" / "intro.md")
    entries = ""
    for name, source in chapters.items():
        (root / "book" / name).write_text(source)
        entries += f"      - file: book/{Path(name).stem}\n"
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nparts:\n  - caption: Chapters\n"
                                   f"    chapters:\n{entries}")
    return root


# ------------------------------------------------------------------------------------------ profiles


def test_profiles_load():
    assert {"smoke", "cpu", "paper"} <= set(profile_names())
    smoke, cpu, paper = load_profile("smoke"), load_profile("cpu"), load_profile("paper")
    assert smoke["name"] == "smoke" and smoke["cell_timeout"] > 0
    assert cpu["models"] == ["smollm2-135m", "gemma3-270m"]
    assert paper["models"] == ["gpt2", "meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B"]
    for prof in (smoke, cpu, paper):
        for key in ("models", "n_facts_per_relation", "relations", "steps", "methods", "t_threshold", "seed"):
            assert key in prof, (prof["name"], key)


def test_unknown_profile_lists_profiles():
    with pytest.raises(ParameterError, match="smoke"):
        load_profile("nope")


def test_declared_parameters(tmp_path):
    declared = declared_parameters(_chapter(tmp_path))
    assert declared["models"] == ["smollm2-135m"] and declared["t_threshold"] == 0.2 and declared["profile"] == "smoke"
    assert declared_parameters(REPO / "book" / "00_setup.py") == {"models": ["smollm2-135m"], "profile": "smoke"}


def test_parameters_for_filters_and_merges(tmp_path):
    ch = _chapter(tmp_path, CHAPTER.replace("steps = 20\n", ""))
    params = parameters_for(ch, "smoke", {"seed": 3})
    smoke = load_profile("smoke")
    assert "steps" not in params and "cell_timeout" not in params and "description" not in params
    assert params["seed"] == 3 and params["profile"] == "smoke" and params["models"] == smoke["models"]
    # chapter-specific overrides of a profile apply by file-name prefix
    prof = dict(smoke, chapters={"01": {"n_facts_per_relation": 7}, "02": {"seed": 9}})
    params = parameters_for(ch, prof, {})
    assert params["n_facts_per_relation"] == 7 and params["seed"] == smoke["seed"]


def test_parameters_for_only_profile_for_00():
    assert parameters_for(REPO / "book" / "00_setup.py", "cpu") == {
        "models": ["smollm2-135m", "gemma3-270m"], "profile": "cpu"}


def test_unknown_parameter_lists_valid_ones(tmp_path):
    with pytest.raises(ParameterError) as info:
        parameters_for(_chapter(tmp_path), "smoke", {"n_facts": 50})
    msg = str(info.value)
    assert "n_facts" in msg and "n_facts_per_relation = 10" in msg and "t_threshold = 0.2" in msg


@pytest.mark.parametrize("name,value", [("steps", 2.5), ("steps", "many"), ("steps", True), ("models", [1, 2]),
                                        ("t_threshold", "high"), ("relations", 5)])
def test_wrong_type_is_an_error(tmp_path, name, value):
    with pytest.raises(ParameterError) as info:
        parameters_for(_chapter(tmp_path), "smoke", {name: value})
    assert name in str(info.value) and "Valid parameters" in str(info.value)


def test_profile_is_not_a_parameter(tmp_path):
    with pytest.raises(ParameterError, match="--profile"):
        parameters_for(_chapter(tmp_path), "smoke", {"profile": "cpu"})


def test_type_conversions(tmp_path):
    params = parameters_for(_chapter(tmp_path), "smoke", {"t_threshold": 0, "relations": "P36,P103", "models": ["gpt2"]})
    # int -> float (t_threshold=1 would keep no neuron: refused, see test_robust.py)
    assert params["t_threshold"] == 0.0 and isinstance(params["t_threshold"], float)
    assert params["relations"] == ["P36", "P103"] and params["models"] == ["gpt2"]


def test_parse_overrides():
    assert parse_overrides(["n=5", "x=0.5", "b=True", "l=['a', 'b']", "s=gpt2", "m=meta-llama/Llama-2-7b-hf"]) == {
        "n": 5, "x": 0.5, "b": True, "l": ["a", "b"], "s": "gpt2", "m": "meta-llama/Llama-2-7b-hf"}
    assert parse_value("[1, 2]") == [1, 2]
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        parse_overrides(["steps"])


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_help(capsys):
    for argv in (["--help"], ["book", "--help"], ["run", "--help"], ["models", "--help"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
    assert "--profile" in capsys.readouterr().out


def test_cli_bad_input_exit_2_no_traceback(tmp_path, capsys):
    root = _book(tmp_path, {"01_test.py": CHAPTER})
    assert cli.main(["run", "01", "--root", str(root), "--profile", "smoke", "-p", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "steps = 20" in err and "Traceback" not in err
    assert cli.main(["run", "01", "--root", str(root), "-p", "steps=many"]) == 2
    assert cli.main(["run", "99", "--root", str(root)]) == 2
    assert "01_test.py" in capsys.readouterr().err
    assert cli.main(["run", "01", "--root", str(root), "--profile", "nope"]) == 2
    assert not (root / "_build" / "executed").exists()  # nothing ran


def test_cli_model_shorthand(tmp_path):
    from kqlib.book.run.runner import _model_shorthand

    ch = _chapter(tmp_path)
    assert _model_shorthand(ch, {"model": "gpt2"}) == {"models": ["gpt2"]}
    assert _model_shorthand(ch, {"model": ["gpt2", "x"]}) == {"models": ["gpt2", "x"]}


def test_cli_models(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out and "fp32 cache" in out


def test_toc_lists_setup_chapter():
    assert toc_documents(REPO)[0] == "book/intro"
    assert REPO / "book" / "00_setup.py" in notebook_chapters(REPO)


# -------------------------------------------------------------------------------- execution (papermill)


@pytest.mark.book
def test_failing_chapter_is_not_kept(tmp_path, capsys):
    """A failed run publishes nothing and keeps the last good notebook, record, results and data."""
    writes = ('\n# %%\nfrom kqlib.book import report\nreport.write_results("01_fail", {"x": 2}, {})\n'
              'import pandas as pd\nfrom kqlib.book.site.data_export import write_table\n'
              'write_table("01_fail", "t", pd.DataFrame({"x": [2]}))\n')
    failing = CHAPTER + writes + '\n# %%\nraise ValueError("boom in chapter")\n'
    root = _book(tmp_path, {"01_fail.py": failing})
    build = root / "_build"
    executed = build / "executed" / "book" / "01_fail.ipynb"
    good = {executed: "{}", executed.with_name("01_fail.inputs.json"): '{"digest": "x"}',
            build / "results" / "01_fail.json": '{"chapter": "01_fail", "numbers": {"x": 1}, "run": {}}',
            build / "data" / "01_fail" / "t.csv": "x\n1\n"}
    for path, text in good.items():  # the last good run's outputs
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert cli.main(["run", "01", "--root", str(root), "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "book/01_fail.py" in err and "cell 5" in err and "ValueError: boom in chapter" in err
    assert "raise ValueError" in err and "Traceback" not in err.split("failed at")[0]
    assert {path: path.read_text() for path in good} == good  # nothing of the failed run was published
    assert not list((root / "_build" / "tmp").glob("*.ipynb")) and not list((root / "_build" / "tmp").glob("*.out"))
    assert (root / "_build" / "failed" / "01_fail.ipynb").exists()
    with pytest.raises(ChapterFailed):
        execute_chapter(root, root / "book" / "01_fail.py", load_profile("smoke"))


@pytest.fixture(scope="module")
def setup_book(tmp_path_factory):
    """Chapter 00 executed with the smoke profile through the `kq` command, in a copy of the book."""
    tmp = tmp_path_factory.mktemp("book00")
    root = _book(tmp, {"00_setup.py": (REPO / "book" / "00_setup.py").read_text()})
    kq = Path(sys.executable).with_name("kq")
    proc = subprocess.run([str(kq), "run", "00", "--profile", "smoke", "--root", str(root)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 book/00_setup.py: done" in proc.stdout
    return root


@pytest.mark.book
def test_setup_chapter_results(setup_book):
    data = json.loads((setup_book / "_build" / "results" / "00_setup.json").read_text())
    nums, run = data["numbers"], data["run"]
    assert data["chapter"] == "00_setup"
    assert nums["n_models"] == 1 and nums["n_facts"] >= 3
    for key in ("p_paris", "mean_p_answer", "top1_accuracy"):
        assert 0.0 <= nums[key] <= 1.0 and math.isfinite(nums[key])
    assert nums["p_paris"] > 0.3  # SmolLM2 knows this one (p ~ 0.77)
    assert run["models"] == ["smollm2-135m"] and len(run["fingerprints"]["smollm2-135m"]) == 24
    assert run["profile"] == "smoke" and run["parameters"]["profile"] == "smoke"
    assert run["kqlib_version"] and run["git_revision"] and run["wall_time_s"] > 0
    assert run["device"]["cpu"] and run["device"]["model_devices"] == ["cpu"] or run["device"]["gpu"]


@pytest.mark.book
def test_setup_chapter_glue_equals_json(setup_book):
    data = json.loads((setup_book / "_build" / "results" / "00_setup.json").read_text())
    nb = nbformat.read(setup_book / "_build" / "executed" / "book" / "00_setup.ipynb", as_version=4)
    assert "jupytext" not in nb.metadata
    glued = read_glued(setup_book / "_build" / "executed" / "book" / "00_setup.ipynb")
    assert glued and set(glued) <= set(data["numbers"])
    for key, value in glued.items():
        assert value == pytest.approx(data["numbers"][key], rel=1e-12), key
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "smoke"' in injected[0].source and "/" not in injected[0].source
    text = json.dumps(nb)
    assert "IProgress" not in text and "Loading weights" not in text
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 1


@pytest.mark.book
def test_html_build_offline_mathjax(setup_book):
    root = setup_book
    assert cli.main(["book", "--root", str(root), "--profile", "smoke", "--no-execute"]) == 0
    html = root / "_build" / "html"
    assert (html / "index.html").exists()
    page = html / "book" / "00_setup.html"
    intro = html / "book" / "intro.html"
    assert page.exists() and intro.exists()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert list((html / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    data = json.loads((root / "_build" / "results" / "00_setup.json").read_text())
    text = page.read_text()
    assert f"{data['numbers']['p_paris']:.2f}" in text  # the glued number is rendered in the prose
    assert "_static/mathjax/tex-chtml.js" in text
    assert text.count("<script") < 40  # not one script tag per MathJax component
    assert "chen2025knowledge" in intro.read_text() or "Chen" in intro.read_text()
    for p in html.rglob("*.html"):
        t = p.read_text()
        for cdn in ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "polyfill.io", "mathjax@"):
            assert cdn not in t, (p, cdn)
    assert json.loads((root / "_build" / "timings.json").read_text())["smoke"]["html"] > 0


def test_results_records_are_json_ready():
    import numpy as np
    import pandas as pd

    from kqlib.book.report import finite_or_none, records

    assert finite_or_none(np.float32(0.5)) == 0.5
    assert finite_or_none(float("nan")) is None and finite_or_none(None) is None and finite_or_none("x") is None
    df = pd.DataFrame({"a": [1.5, np.nan], "ids": [[np.int64(3)], []], "name": ["p", "q"]})
    assert records(df) == [{"a": 1.5, "ids": [3], "name": "p"}, {"a": None, "ids": [], "name": "q"}]
    assert type(records(df)[0]["ids"][0]) is int
