"""Chapter 07 (knowledge neurons by layer): the module's shares and depths on a toy whose answer is known,
and the notebook executed with the smoke profile through `kq run 07`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chapter_checks import check_figures, check_glue, results
from kqlib.book.chapters import ch07_kn_by_layer as K
from kqlib.errors import ParameterError
from test_book import REPO, _book

NAME = "07_kn_by_layer"


def _kn(rows):
    """rows: (model, relation, fact_id, pattern_index, layers of its KNs)."""
    out = [{"model": m, "method": "ig", "relation": r, "fact_id": f, "pattern_index": q, "layer": layer,
            "neuron": i} for m, r, f, q, layers in rows for i, layer in enumerate(layers)]
    return pd.DataFrame(out)


def test_layer_shares_weigh_every_query_equally():
    # query A: 1 KN in layer 0; query B: 3 KNs, all in layer 3 -> per-query shares (1, 0, 0, 0) and (0, 0, 0, 1)
    kn = _kn([("m", "P1", 1, 0, [0]), ("m", "P1", 1, 1, [3, 3, 3])])
    s = K.layer_shares(kn, {"m": 4}).set_index("layer")
    assert list(s["share"]) == [0.5, 0.0, 0.0, 0.5]  # not 1/4 vs 3/4, as pooling the KNs would give
    assert list(s["depth"]) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert (s["n_queries"] == 2).all() and s["share"].sum() == pytest.approx(1.0)


def test_depth_summary_separates_deep_from_shallow_models_and_resamples_facts():
    rng = np.random.default_rng(0)
    rows = []
    for f in range(12):
        for q in range(3):
            rows.append(("deep", "P1", f, q, list(rng.integers(9, 12, size=5))))     # layers 9..11 of 12
            rows.append(("shallow", "P1", f, q, list(rng.integers(0, 3, size=5))))   # layers 0..2 of 12
    s = K.depth_summary(_kn(rows), {"deep": 12, "shallow": 12}, n_boot=500).set_index("model")
    assert s.loc["deep", "top_third"] == 1.0 and s.loc["shallow", "top_third"] == 0.0
    assert s.loc["deep", "depth_low"] > 0.8 > 0.2 > s.loc["shallow", "depth_high"]
    assert s.loc["deep", "depth_low"] <= s.loc["deep", "mean_depth"] <= s.loc["deep", "depth_high"]
    assert (s["n_facts"] == 12).all() and (s["n_queries"] == 36).all()


def test_bad_inputs_are_refused_with_what_to_do():
    kn = _kn([("m", "P1", 1, 0, [0])])
    with pytest.raises(ParameterError, match="no layer count"):
        K.layer_shares(kn, {})
    with pytest.raises(ParameterError, match="lacks the column"):
        K.depth_summary(kn.drop(columns="layer"), {"m": 2})


def test_no_knowledge_neurons_gives_empty_tables_and_a_figure_that_says_so():
    empty = _kn([]).reindex(columns=["model", "method", "relation", "fact_id", "pattern_index", "layer"])
    assert K.layer_shares(empty, {}).empty and K.depth_summary(empty, {}).empty
    fig = K.layer_figure(K.layer_shares(empty, {}), ["m"], "ig")
    assert "no knowledge neurons" in fig.axes[0].texts[0].get_text()


@pytest.mark.book
def test_chapter07_runs_with_the_smoke_profile(tmp_path):
    root = _book(tmp_path, {f"{NAME}.py": (REPO / "book" / f"{NAME}.py").read_text()})
    kq = Path(sys.executable).with_name("kq")
    proc = subprocess.run([str(kq), "run", "07", "--profile", "smoke", "--root", str(root)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = results(root, NAME)
    shares = pd.DataFrame(data["numbers"]["layer_shares"])
    sums = shares.groupby(["model", "method", "relation"])["share"].sum()
    assert len(sums) >= 1 and np.allclose(sums, 1.0)
    summary = pd.DataFrame(data["numbers"]["depth_summary"])
    assert ((summary.depth_low <= summary.mean_depth) & (summary.mean_depth <= summary.depth_high)).all()
    check_figures(root, data["numbers"]["figures"])
    check_glue(root, NAME)
