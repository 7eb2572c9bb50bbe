"""`kq attribute --rule adaptive`: a diagnostics side table; steps/tol misuse refused before any work."""

import subprocess
import sys

import pandas as pd

from tiny import tiny_lm


def kq(*args):
    return subprocess.run([sys.executable, "-m", "kqlib.cli", *args], capture_output=True, text=True, timeout=600)


def test_adaptive_rule_writes_a_diagnostics_side_table(tmp_path):
    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "kn.csv"
    r = kq("attribute", "--model", str(tmp_path / "m"), "--relation", "P103", "--facts", "1", "--rule", "adaptive",
           "--tol", "0.001", "--top-k", "1000", "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    side = pd.read_csv(tmp_path / "kn-diagnostics.csv")
    assert len(side) >= 2 and (side.points >= 5 * lm.n_layers).all()
    assert (side.error_estimate <= 0.001).all() and side.converged.all()
    assert {"prompt", "max_completeness_gap", "points_per_layer"} <= set(side.columns)
    assert "estimated error" in r.stdout


def test_steps_with_the_adaptive_rule_and_a_bad_tol_are_refused():
    for args, words in ((["--rule", "adaptive", "--steps", "20"], "leave steps unset"),
                        (["--rule", "adaptive", "--tol", "0"], "tol must be"),
                        (["--rule", "adaptive", "--tol", "nan"], "tol must be"),
                        (["--tol", "0.01"], "applies to rule='adaptive' only")):
        r = kq("attribute", "--facts", "1", *args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
