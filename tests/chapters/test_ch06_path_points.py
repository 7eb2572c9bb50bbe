"""Chapter 06 (How many path points?): the module's per-model tables on two tiny random llamas with ParaRel-like
queries, against answers known without the module: the reference's own rule has error 0 and Jaccard 1, a fine
rule is closer to the reference than a coarse one, the error is max|S - S*| / max|S*| of the attributions, each
model is measured on its own queries, and the summaries have one row per (model, rule).

The notebook itself runs in tests/chapters/test_few_facts.py (the chapter's source on tiny models)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import kqlib
from kqlib.book.chapters import ch06_path_points as K
from kqlib.errors import ParameterError
from kqlib.paper.pararel import Query, attach_answers
from tiny import tiny_lm

matplotlib.use("Agg")

REF = 32  # Gauss-Legendre nodes of the reference: "gauss-32" is the reference itself
SETTINGS = ["riemann-2", "gauss-8", f"gauss-{REF}", "adaptive"]
# two facts of P36 in the tiny vocabulary, two phrasings each (CS2 needs two queries of a fact)
PHRASINGS = {("france", "paris"): ["the capital of france is", "the capital city of france is"],
             ("italy", "rome"): ["the capital of italy is", "the capital city of italy is"]}


def _queries(lm, n_facts):
    qs = [Query(f"{s}-P36", "P36", s, o, p, j) for (s, o), ps in list(PHRASINGS.items())[:n_facts]
          for j, p in enumerate(ps)]
    return attach_answers(lm, qs)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Models "a" (2 facts, 4 queries) and "b" (1 fact, 2 queries), float64; one attribution cache for the module."""
    lms = []
    for name, seed in (("a", 3), ("b", 4)):
        lm = tiny_lm("llama", seed=seed, dtype=torch.float64)
        lm.name = name
        lms.append(lm)
    queries = {"a": _queries(lms[0], 2), "b": _queries(lms[1], 1)}
    cache = tmp_path_factory.mktemp("ch06_cache")
    common = dict(reference_points=REF, tol=1e-3, t=0.2, site="post", cache=cache)
    return lms, queries, common


@pytest.fixture(scope="module")
def per_query(toy):
    lms, queries, common = toy
    return K.per_query(lms, queries, SETTINGS, **common)


def test_per_query_measures_each_model_on_its_own_queries(toy, per_query):
    lms, queries, common = toy
    df = per_query
    assert set(df.setting) == set(SETTINGS)
    assert df.groupby("model").size().to_dict() == {"a": 4 * len(SETTINGS), "b": 2 * len(SETTINGS)}
    for lm in lms:
        mine = df[(df.model == lm.name) & (df.setting == "riemann-2")]
        assert list(zip(mine.fact_id, mine.pattern_index)) == [(q.fact_id, q.pattern_index) for q in queries[lm.name]]
    # the reference's own rule reproduces it exactly
    own = df[df.setting == f"gauss-{REF}"]
    assert (own.error == 0).all() and (own.jaccard == 1).all() and (own.n_kn == own.n_kn_reference).all()
    # a finer rule is closer to the reference, on every query
    coarse = df[df.setting == "riemann-2"].set_index(["model", "fact_id", "pattern_index"]).error
    fine = df[df.setting == "gauss-8"].set_index(["model", "fact_id", "pattern_index"]).error
    assert (fine < coarse).all() and (coarse > 0.01).all()
    adaptive = df[df.setting == "adaptive"]
    assert (adaptive.error <= 1e-3).all() and (adaptive.points > 2).all()  # within tol, with more than 2 points
    assert df.jaccard.between(0, 1).all()


def test_per_query_error_is_the_relative_max_abs_difference_of_the_attributions(toy, per_query):
    lms, queries, common = toy
    lm, qs = lms[1], queries["b"]
    coarse = kqlib.attribute_many(lm, qs, rule="riemann", steps=2, cache=common["cache"], progress=False)
    ref = kqlib.attribute_many(lm, qs, rule="gauss", steps=REF, cache=common["cache"], progress=False)
    expected = [float((s - r).abs().max() / r.abs().max()) for s, r in zip(coarse, ref)]
    got = per_query[(per_query.model == "b") & (per_query.setting == "riemann-2")].error
    assert list(got) == pytest.approx(expected, rel=1e-9)


def test_per_query_summary_has_one_row_per_model_and_rule(per_query):
    s = K.per_query_summary(per_query)
    assert len(s) == 2 * len(SETTINGS) and not s.duplicated(["model", "setting"]).any()
    assert {"mean_error", "ci_low_error", "ci_high_error", "median", "mean_jaccard", "ci_low_jaccard",
            "ci_high_jaccard", "n"} <= set(s.columns)
    s = s.set_index(["model", "setting"])
    means = per_query.groupby(["model", "setting"])[["error", "jaccard"]].mean()
    assert np.allclose(s.loc[means.index, "mean_error"], means.error)
    assert np.allclose(s.loc[means.index, "mean_jaccard"], means.jaccard)
    assert s.loc[("a", f"gauss-{REF}"), "mean_error"] == 0 and s.loc[("a", f"gauss-{REF}"), "mean_jaccard"] == 1
    assert s.loc[("a", "riemann-2"), "mean_error"] > s.loc[("a", "gauss-8"), "mean_error"]
    assert s.loc[("a", "riemann-2"), "n"] == 2 and s.loc[("b", "riemann-2"), "n"] == 1  # facts, not queries
    assert ((s.ci_low_error <= s.mean_error + 1e-15) & (s.mean_error <= s.ci_high_error + 1e-15)).all()


def test_path_points_figure_plots_the_median_error_and_mean_jaccard_per_rule(per_query):
    import matplotlib.pyplot as plt

    fig = K.path_points_figure(per_query)
    try:
        left, right = fig.axes
        assert left.get_xscale() == "log" and left.get_yscale() == "log" and right.get_xscale() == "log"
        med = per_query.groupby(["model", "setting"]).error.median()
        plotted = sorted(y for line in left.lines for y in np.asarray(line.get_ydata(), float))
        assert plotted == pytest.approx(sorted(med))  # one point per (model, rule)
        jac = sorted(y for line in right.lines for y in np.asarray(line.get_ydata(), float))
        assert jac == pytest.approx(sorted(per_query.groupby(["model", "setting"]).jaccard.mean()))
    finally:
        plt.close(fig)


def test_per_fact_class_follows_cs_and_theta_and_the_reference_never_changes_class(toy):
    lms, queries, common = toy
    labels = ["riemann-2", f"gauss-{REF}"]
    f = K.per_fact(lms, queries, labels, theta=0.3, kind="cs2", **common)
    assert len(f) == 3 * len(labels)  # facts with two queries: 2 of a, 1 of b; one row per rule
    own = f[f.setting == f"gauss-{REF}"]
    assert (own.cs == own.cs_reference).all() and (own.class_changed == 0).all() and (own.cs_abs_diff == 0).all()
    assert f.cs.between(0, 1).all()
    # a θ between a fact's CS under riemann-2 and its reference CS: that fact changes class, and only by θ
    worst = f[f.setting == "riemann-2"].sort_values("cs_abs_diff").iloc[-1]
    assert worst.cs_abs_diff > 0
    theta = (worst.cs + worst.cs_reference) / 2
    g = K.per_fact(lms, queries, labels, theta=theta, kind="cs2", **common)
    assert np.allclose(g.cs, f.cs)  # θ moves classes, not scores
    assert (g["class"] == np.where(g.cs < theta, "K_I", "K_C")).all()
    assert (g.class_changed == (g["class"] != g.class_reference)).all()
    moved = g[(g.model == worst.model) & (g.fact_id == worst.fact_id) & (g.setting == "riemann-2")]
    assert moved.class_changed.iloc[0] == 1.0
    # θ = 0: no CS lies below it, no fact is K_I under any rule
    table = K.fact_summary(K.per_fact(lms, queries, labels, theta=0.0, kind="cs2", **common))
    assert len(table) == 2 * len(labels) and (table.share_ki == 0).all()
    assert table.set_index(["model", "setting"]).facts.to_dict() == {
        ("a", "gauss-32"): 2, ("a", "riemann-2"): 2, ("b", "gauss-32"): 1, ("b", "riemann-2"): 1}


def test_cheap_rankings_against_the_reference(toy):
    lms, queries, common = toy
    ranks = K.cheap_rankings(lms, queries, ["riemann-1", f"gauss-{REF}"], reference_points=REF, site="post", t=0.2,
                             cache=common["cache"])
    assert len(ranks) == (4 + 2) * 2 and set(ranks.setting) == {"riemann-1", f"gauss-{REF}"}
    own = ranks[ranks.setting == f"gauss-{REF}"]
    assert np.allclose(own.spearman, 1.0) and (own.jaccard == 1).all()  # the reference ranks itself perfectly
    one = ranks[ranks.setting == "riemann-1"]
    assert one.spearman.between(-1, 1).all() and (one.spearman < 1).all()  # a x grad p(a) is not the integral
    summary = K.cheap_summary(ranks)
    assert len(summary) == 2 * 2 and not summary.duplicated(["model", "setting"]).any()
    assert {"mean_spearman", "ci_low_spearman", "ci_high_spearman", "mean_jaccard"} <= set(summary.columns)
    assert summary.mean_spearman.between(-1, 1).all() and summary.mean_jaccard.between(0, 1).all()
    s = summary.set_index(["model", "setting"])
    b_one = ranks[(ranks.model == "b") & (ranks.setting == "riemann-1")]
    assert s.loc[("b", "riemann-1"), "mean_spearman"] == pytest.approx(b_one.spearman.mean())
    with pytest.raises(ParameterError, match="not 'adaptive'"):
        K.cheap_rankings(lms, queries, ["adaptive"], reference_points=REF, cache=common["cache"])


def test_headline_takes_the_worst_model_and_nan_for_rules_not_run(toy, per_query):
    lms, queries, common = toy
    facts = K.fact_summary(K.per_fact(lms, queries, ["adaptive"], theta=0.3, kind="cs2", **common))
    ranks = K.cheap_rankings(lms, queries, ["riemann-1"], reference_points=REF, cache=common["cache"])
    cheap = K.cheap_summary(ranks)
    h = K.headline(per_query, facts, cheap)
    assert h["n_queries"] == 6 and h["n_facts"] == 3
    adaptive = per_query[per_query.setting == "adaptive"].groupby("model")
    assert h["adaptive_median_error"] == pytest.approx(adaptive.error.median().max())  # the worse model's
    assert h["one_point_spearman"] == pytest.approx(cheap.mean_spearman.min())
    assert 0 <= h["adaptive_class_changed"] <= 1
    assert all(np.isnan(h[k]) for k in ("riemann20_median_error", "riemann20_mean_jaccard", "riemann20_class_changed"))
    assert all(type(v) in (int, float) for v in h.values())  # plain numbers: the page glues them
