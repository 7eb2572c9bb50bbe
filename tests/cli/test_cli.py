"""The `kq` command line: help, clear errors, and `kq attribute` end to end on a tiny model."""

import subprocess
import sys

import pandas as pd

from kqlib.cli import main
from tiny import tiny_lm


def kq(*args):
    return subprocess.run([sys.executable, "-m", "kqlib.cli", *args], capture_output=True, text=True, timeout=600)


def test_help_everywhere(capsys):
    for cmd in ([], ["attribute"], ["data"], ["models"], ["run"], ["book"]):
        try:
            main([*cmd, "--help"])
        except SystemExit as e:
            assert e.code == 0
        out = capsys.readouterr().out
        assert "usage: kq" in out


def test_bad_method_is_a_clear_error_without_traceback():
    r = kq("attribute", "--method", "gradcam")
    assert r.returncode == 2
    assert "unknown method" in r.stderr and "Traceback" not in r.stderr


def test_unknown_model_is_a_clear_error():
    r = kq("attribute", "--model", "no-such-model-xyz", "--facts", "1")
    assert r.returncode == 2 and "smollm2-135m" in r.stderr and "Traceback" not in r.stderr


def test_attribute_writes_a_tidy_table(tmp_path):
    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "kn.csv"
    r = kq("attribute", "--model", str(tmp_path / "m"), "--relation", "P103", "--facts", "2", "--steps", "3",
           "--top-k", "1000", "--method", "ig,sig", "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert "ETA" in r.stderr
    df = pd.read_csv(out)
    assert set(df.method) == {"ig", "sig"}
    assert {"relation", "fact_id", "prompt", "layer", "neuron", "score", "rel_score"} <= set(df.columns)
    assert (df.rel_score > 0.2).all() and (df.rel_score <= 1.0 + 1e-6).all()
    assert df.fact_id.nunique() == 2
