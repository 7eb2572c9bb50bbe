"""Issue 10: nothing a user does wrong gives a silent wrong answer; every input is refused before any work.

Each bad command line must exit 2 with a message (what was wrong, what to do) and no traceback, without
loading a model, reading ParaRel facts for attribution or attributing anything.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import torch

import kqlib.core.models
from kqlib import cli
from kqlib.paper import pararel, pararel_files

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pararel"
needs_shared = pytest.mark.skipif(not (SHARED / "patterns").is_dir(), reason=f"ParaRel data not found at {SHARED}")


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if anything loads a model, builds a dataset or attributes."""
    import kqlib.runs.many

    def forbidden(*a, **k):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr(kqlib.core.models, "load", forbidden)
    monkeypatch.setattr(pararel, "build_dataset", forbidden)
    monkeypatch.setattr(kqlib.runs.many, "attribute_many", forbidden)
    monkeypatch.setattr(kqlib.runs.many, "attribute", forbidden)


def run_kq(argv, capsys) -> tuple[int, str]:
    """``kq ARGV`` in-process: (exit status, stderr); argparse errors count with their exit status."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def _pararel(root: pathlib.Path, patterns, tuples, relation="P103") -> pathlib.Path:
    (root / "patterns").mkdir(parents=True, exist_ok=True)
    (root / "tuples").mkdir(parents=True, exist_ok=True)
    for sub, content in (("patterns", patterns), ("tuples", tuples)):
        path = root / sub / f"{relation}.jsonl"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in content))
    return root


GOOD_PATTERNS = [{"pattern": "The native language of [X] is [Y]."}, {"pattern": "[X] speaks [Y]."}]
GOOD_TUPLES = [{"sub_label": "Paris", "obj_label": "French", "uuid": "u1"}]


# ------------------------------------------------------------------------------- kq attribute (items 1, 3, 5)


@needs_shared
@pytest.mark.parametrize("argv,expected", [
    (["--batch-size", "-1"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--method", ","], "--method"),
    (["--method", "ig,ig"], "more than once"),
    (["--relation", ""], "names nothing"),
    (["--relation", "P36,P36"], "more than once"),
    (["--relation", "P103,,P36"], "empty item"),
    (["--threshold", "1.5"], "--threshold"),
    (["--threshold", "1"], "keeps no neuron"),
    (["--threshold", "nan"], "--threshold"),
    (["--steps", "0"], "--steps"),
    (["--top-k", "0"], "--top-k"),
    (["--facts", "0"], "--facts"),
    (["--device", "gpu"], "not a device name"),
    (["--relation", "P9999"], "P9999"),
    (["--workers", "2"], "--executor ray only"),
    (["--workers", "0", "--executor", "ray"], "--workers"),
])
def test_attribute_refuses_bad_values_before_any_work(argv, expected, no_work, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, err = run_kq(["attribute", "--pararel", str(SHARED), "--cache", str(tmp_path / "c"), *argv], capsys)
    assert status == 2, err
    assert expected in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.pt"))


@needs_shared
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_cuda_on_cpu_torch_is_refused(no_work, capsys):
    status, err = run_kq(["attribute", "--pararel", str(SHARED), "--device", "cuda"], capsys)
    assert status == 2 and "no CUDA" in err and "--device cpu" in err


@needs_shared
def test_attribute_refuses_unwritable_outputs_before_any_work(no_work, capsys, tmp_path, monkeypatch):
    base = ["attribute", "--pararel", str(SHARED), "--cache", str(tmp_path / "c")]
    status, err = run_kq([*base, "--out", str(tmp_path / "missing" / "kn.csv")], capsys)
    assert status == 2 and "does not exist" in err and "missing" in err
    status, err = run_kq([*base, "--out", str(tmp_path / "kn.xlsx")], capsys)
    assert status == 2 and ".csv or .parquet" in err
    status, err = run_kq(["attribute", "--pararel", str(SHARED), "--cache", "/dev/null/x"], capsys)
    assert status == 2 and "/dev/null" in err and "not a folder" in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("pyarrow", "fastparquet") else real(name, *a, **k))
    status, err = run_kq([*base, "--out", str(tmp_path / "kn.parquet")], capsys)
    assert status == 2 and "pyarrow" in err


# ------------------------------------------------------------------------------------- models (item 6)


def _folder(tmp_path, name, files: dict) -> str:
    d = tmp_path / name
    d.mkdir()
    for fname, text in files.items():
        (d / fname).write_text(text)
    return str(d)


def test_model_folders_that_are_not_models(tmp_path):
    from kqlib.errors import KqError

    llama_cfg = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    cases = {
        "empty": (_folder(tmp_path, "empty", {}), "empty"),
        "no config": (_folder(tmp_path, "notes", {"README.md": "hi"}), "no config.json"),
        "no weights": (_folder(tmp_path, "nowts", {"config.json": llama_cfg}), "no weights"),
        "t5": (_folder(tmp_path, "t5", {"config.json": json.dumps({"model_type": "t5"}),
                                       "model.safetensors": "x"}), "t5"),
        "bad json": (_folder(tmp_path, "badjson", {"config.json": "{nope"}), "not a valid model config"),
    }
    for what, (path, expected) in cases.items():
        with pytest.raises(KqError, match=expected):
            kqlib.core.models.load(path)


def test_model_folder_with_broken_weights_is_a_message(tmp_path, capsys):
    from tiny import tiny_lm

    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    weights = next((tmp_path / "m").glob("*.safetensors"))
    weights.write_bytes(b"garbage" * 10)
    from kqlib.errors import KqError

    with pytest.raises(KqError, match="Could not load the model folder"):
        kqlib.core.models.load(str(tmp_path / "m"))


@needs_shared
def test_cli_model_folder_is_checked_before_any_work(tmp_path, no_work, capsys):
    t5 = _folder(tmp_path, "t5", {"config.json": json.dumps({"model_type": "t5"}), "model.safetensors": "x"})
    status, err = run_kq(["attribute", "--pararel", str(SHARED), "--model", t5], capsys)
    assert status == 2 and "model_type='t5'" in err and "sentencepiece" not in err


def test_resolve_device():
    from kqlib.errors import ParameterError

    assert kqlib.core.models.resolve_device("cpu") == torch.device("cpu")
    assert kqlib.core.models.resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("gpu", "cuda:notanumber", "meta"):
        with pytest.raises(ParameterError):
            kqlib.core.models.resolve_device(bad)


# ---------------------------------------------------------------------------------- kq data (items 3, 6)


@needs_shared
@pytest.mark.parametrize("argv,expected", [
    (["--sample", "-3"], "--sample"),
    (["--top-k", "0"], "--top-k"),
    (["--relations", ""], "names nothing"),
    (["--relations", "P36,P36"], "more than once"),
    (["--out", "/nonexistent-folder-kq/x.csv"], "does not exist"),
    (["--device", "gpu"], "not a device name"),
])
def test_data_refuses_bad_values_before_any_work(argv, expected, no_work, capsys):
    status, err = run_kq(["data", "--pararel", str(SHARED), *argv], capsys)
    assert status == 2, err
    assert expected in err


def test_data_empty_pararel_folder_is_refused(tmp_path, no_work, capsys):
    (tmp_path / "patterns").mkdir()
    (tmp_path / "tuples").mkdir()
    status, err = run_kq(["data", "--no-model", "--pararel", str(tmp_path)], capsys)
    assert status == 2 and "holds no relation" in err and "Empty DataFrame" not in err


@pytest.mark.parametrize("patterns,tuples,expected", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20, GOOD_TUPLES, "not a text"),
    ([[1, 2]], GOOD_TUPLES, "not a JSON object"),
    ([{"pattern": 5}], GOOD_TUPLES, "non-text 'pattern'"),
    ([{"template": "[X] speaks [Y]."}], GOOD_TUPLES, "lacks the 'pattern'"),
    (GOOD_PATTERNS, [[1, 2]], "not a JSON object"),
    (GOOD_PATTERNS, [{"sub_label": ["a"], "obj_label": "b", "uuid": "c"}], "non-text 'sub_label'"),
])
def test_damaged_pararel_files_are_messages(tmp_path, capsys, patterns, tuples, expected):
    root = _pararel(tmp_path / "pr", patterns, tuples)
    status, err = run_kq(["data", "--no-model", "--pararel", str(root), "--relations", "P103"], capsys)
    assert status == 2 and expected in err and "P103.jsonl" in err
    assert "restore it from a good copy" in err  # not a download: deleting it would only make it unknown


def test_truncated_download_is_fetched_again_after_deleting_it(tmp_path, monkeypatch):
    """The advice for a damaged *downloaded* file is to delete it; then kqlib must fetch it, not say
    "relation unknown"."""
    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KQLIB_PARAREL", raising=False)
    monkeypatch.setattr(pararel_files, "_shared_candidates", lambda: [])
    dest = pararel.cache_dir()
    _pararel(dest, GOOD_PATTERNS, GOOD_TUPLES)
    (dest / "patterns" / "P103.jsonl").write_text('{"pattern": "The native lang')  # truncated
    (dest / pararel.COMPLETE_MARKER).write_text("done\n")
    monkeypatch.setattr(pararel_files, "upstream_files",
                        lambda relations=None: [("p", "patterns/P103.jsonl"), ("t", "tuples/P103.jsonl")])
    with pytest.raises(pararel.DataError, match="delete") as info:
        pararel.load_patterns("P103")
    assert "downloads the missing file again" in str(info.value)
    fetched = []

    def fake_download(d, *a, **k):
        fetched.append(d)
        _pararel(d, GOOD_PATTERNS, GOOD_TUPLES)
        return d

    monkeypatch.setattr(pararel_files, "download_pararel", fake_download)
    (dest / "patterns" / "P103.jsonl").unlink()
    assert [p.template for p in pararel.load_patterns("P103")] == [r["pattern"] for r in GOOD_PATTERNS]
    assert fetched == [dest]


# --------------------------------------------------------------------------------- kq bench (item 3, 5)


@pytest.mark.parametrize("argv,expected", [
    (["--steps", "0"], "--steps"),
    (["--repeats", "0"], "--repeats"),
    (["--threads", "-1"], "--threads"),
    (["--warmup", "-1"], "--warmup"),
    (["--out", "/nonexistent-folder-kq/bench.csv"], "does not exist"),
    (["--out", "bench.parquet"], ".csv or .md"),
])
def test_bench_refuses_bad_values(argv, expected, capsys, monkeypatch):
    from kqlib.bench import suite as bench

    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("the benchmark ran"))
    status, err = run_kq(["bench", *argv], capsys)
    assert status == 2 and expected in err


# ----------------------------------------------------------------------------- kq assignments (item 6)


def test_assignments_out_unwritable(capsys):
    status, err = run_kq(["assignments", "--out", "/dev/null/x"], capsys)
    assert status == 2 and "/dev/null" in err and "not a folder" in err


@needs_shared
def test_missing_model_folder_is_refused_before_any_work(tmp_path, no_work, capsys):
    status, err = run_kq(["attribute", "--pararel", str(SHARED), "--model", str(tmp_path / "nope")], capsys)
    assert status == 2 and "does not exist" in err


def test_book_runner_refuses_an_unknown_model_before_any_chapter_runs(tmp_path, capsys):
    from test_book import CHAPTER, _book

    root = _book(tmp_path, {"01_test.py": CHAPTER})
    for argv in (["run", "01"], ["book", "--no-html"]):
        status, err = run_kq([*argv, "--root", str(root), "--profile", "smoke", "--model", "no-such-model-xyz"],
                             capsys)
        assert status == 2 and "no-such-model-xyz" in err and "smollm2-135m" in err
    assert not (root / "_build" / "executed").exists() and not (root / "_build" / "tmp").exists()


@pytest.mark.parametrize("override,expected", [
    ({"steps": 0}, "steps=0"),
    ({"t_threshold": 1.5}, "[0, 1)"),
    ({"methods": []}, "at least one method"),
    ({"methods": ["ig", "gradcam"]}, "gradcam"),
    ({"methods": "ig,ig"}, "more than once"),
    ({"relations": ["P36", "P36"]}, "more than once"),
    ({"relations": "P36,,P103"}, "empty item"),
    ({"n_facts_per_relation": -1}, ">= 0"),
    ({"models": []}, "at least one model"),
])
def test_chapter_parameters_that_mean_something_else_are_refused(tmp_path, override, expected):
    from test_book import _chapter

    from kqlib.errors import ParameterError
    from kqlib.book.profiles import parameters_for

    with pytest.raises(ParameterError) as info:
        parameters_for(_chapter(tmp_path), "smoke", override)
    assert expected in str(info.value)


def test_an_unknown_answer_filter_is_refused_before_any_chapter_runs():
    from pathlib import Path

    from kqlib.errors import ParameterError
    from kqlib.book.profiles import parameters_for

    chapter = Path(__file__).resolve().parents[2] / "book" / "01_kl_reexamination.py"
    with pytest.raises(ParameterError, match="must be one of correct, all"):
        parameters_for(chapter, "smoke", {"query_filter": "answered"})
    assert parameters_for(chapter, "smoke", {"query_filter": "all"})["query_filter"] == "all"


def test_kq_run_refuses_out_of_range_parameters_before_running(tmp_path, capsys):
    from test_book import CHAPTER, _book

    root = _book(tmp_path, {"01_test.py": CHAPTER})
    status, err = run_kq(["run", "01", "--root", str(root), "--profile", "smoke", "-p", "steps=0"], capsys)
    assert status == 2 and "steps=0" in err and ">= 1" in err
    assert not (root / "_build" / "tmp").exists()
