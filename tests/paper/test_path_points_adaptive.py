"""Chapter 06's library: the adaptive rule in the convergence table, and the cheap rankings against IG."""

from types import SimpleNamespace

import torch

from kqlib.paper import path_points
from tiny import tiny_lm


def _queries(lm):
    pairs = [("the capital of france is", "paris"), ("the capital of germany is", "berlin")]
    return [SimpleNamespace(prompt=p, target_id=lm.answer_token_ids(p, a)[0], relation="P36", fact_id=f"f{i}",
                            pattern_index=0) for i, (p, a) in enumerate(pairs)]


def test_convergence_has_one_adaptive_row_per_query_within_tol(tmp_path):
    lm = tiny_lm("llama", dtype=torch.float64, seed=3)
    df = path_points.convergence(lm, _queries(lm), counts=[2], rules=["riemann", "adaptive"], reference_points=64,
                                 cache=tmp_path, progress=False, tol=1e-3)
    ad = df[df.rule == "adaptive"]
    assert len(ad) == 2 and (ad.error <= 1e-3).all() and (ad.points >= 5).all()
    table = path_points.summary(df)
    assert len(table[table.rule == "adaptive"]) == 1  # one group per model whatever the points per query


def test_cheap_rankings_are_perfect_against_themselves_and_imperfect_against_ig(tmp_path):
    lm = tiny_lm("llama", dtype=torch.float64, seed=3)
    qs = _queries(lm)
    import kqlib

    one_point = kqlib.attribute_many(lm, qs, steps=1, cache=tmp_path, progress=False)
    same = path_points.cheap_rankings(lm, qs, one_point, cheap=[("riemann", 1)], cache=tmp_path, progress=False)
    assert (same.spearman > 0.999).all() and (same.jaccard == 1.0).all()
    ref = kqlib.attribute_many(lm, qs, rule="gauss", steps=64, cache=tmp_path, progress=False)
    df = path_points.cheap_rankings(lm, qs, ref, cache=tmp_path, progress=False)
    assert set(df.rule) == {"riemann-1", "gauss-4"} and len(df) == 4
    g4, r1 = df[df.rule == "gauss-4"], df[df.rule == "riemann-1"]
    assert g4.spearman.mean() > r1.spearman.mean()  # 4 Gauss points rank closer to IG than 1 point
    assert (df.spearman.between(-1, 1)).all()


def test_rules_per_query_and_per_fact_against_the_reference(tmp_path):
    import pytest

    from kqlib.errors import ParameterError
    from kqlib.paper import path_rules

    lm = tiny_lm("llama", dtype=torch.float64, seed=3)
    qs = _queries(lm)
    qs = qs + [SimpleNamespace(prompt="the capital of france is paris and the capital of italy is",
                               target_id=lm.answer_token_ids("the capital of italy is", "rome")[0], relation="P36",
                               fact_id="f0", pattern_index=1)]
    labels = ["riemann-2", "gauss-8", "adaptive"]
    q = path_rules.per_query(lm, qs, labels, reference_points=64, tol=1e-3, cache=tmp_path)
    assert sorted(q.setting.unique()) == sorted(labels) and len(q) == 3 * len(qs)
    s = path_rules.query_summary(q).set_index("setting")
    assert s.loc["adaptive", "mean"] <= 1e-3 < s.loc["riemann-2", "mean"]  # the coarse rule is worse
    assert (s.n == 2).all()  # intervals count facts, not queries
    f = path_rules.per_fact(lm, qs, labels, reference_points=64, tol=1e-3, cache=tmp_path)
    assert set(f.fact_id) == {"f0"}  # only f0 has two queries
    ad = f[f.setting == "adaptive"].iloc[0]
    assert ad.class_changed == 0.0  # within tol, the class is the reference's
    table = path_rules.fact_summary(f)
    assert {"share_ki", "share_ki_low", "class_changed_high", "cs_abs_diff"} <= set(table.columns)
    with pytest.raises(ParameterError, match="RULE-N"):
        path_rules.setting("simpson-4")


def test_per_fact_reference_is_the_per_query_reference_of_the_model(monkeypatch):
    """Gemma2/3's reference is Gauss–Legendre in log(alpha) (a rule in alpha misses where their scores are
    decided); per fact it must be the same integral as per query (and so come from the cache)."""
    import pytest

    from kqlib.paper import path_rules

    class Stop(Exception):
        pass

    calls = []

    def first_localize(lm, queries, methods, **kw):
        calls.append(kw)
        raise Stop

    monkeypatch.setattr(path_rules, "localize", first_localize)
    for model_type, rule in (("gemma3_text", "gauss-log"), ("llama", "gauss")):
        with pytest.raises(Stop):
            path_rules.per_fact(tiny_lm(model_type), [], ["riemann-20"], reference_points=16)
        assert (calls[-1]["rule"], calls[-1]["steps"]) == (rule, 16)
