"""Chapter 02 (the CS distribution): the size ordering and claim 2 on toy frames, and the notebook executed with
the smoke profile after chapter 01 in the same copy of the book (fixture ``book12``), so it reuses 01's cached
attributions exactly as in `kq book`."""

from __future__ import annotations

import pandas as pd
import pytest

from chapter_checks import check_claims, check_figures, check_glue, check_share_rows, results
from kqlib.book.chapters import ch02_consistency_violins as K
from kqlib.book.claims import verdicts as V
from kqlib.book.report import order_by_size

NAME = "02_consistency_violins"
SIZES = {"smollm2-135m": {"parameters": 134_515_008, "non_embedding_parameters": 106_200_000, "mlp_neurons": 46_080},
         "gemma3-270m": {"parameters": 268_098_176, "non_embedding_parameters": 100_000_000, "mlp_neurons": 36_864}}
THETA = dict(cs_kind="cs2", static_threshold=0.3)


def test_smaller_model_is_ordered_by_mlp_neurons_not_parameters():
    assert order_by_size(SIZES)[0] == "gemma3-270m"
    assert order_by_size(SIZES, "parameters")[0] == "smollm2-135m"


def _cs(model, flags):
    rows = []
    for i, ki in enumerate(flags):
        for method in ("ig", "sig"):
            rows.append(dict(model=model, method=method, fact_id=f"{model}-{i}", cs2=0.1 if ki else 0.8,
                             union_size=3))
    return rows


def test_claim_2_difference_of_shares_with_an_interval_over_facts():
    # the model with fewer MLP neurons (gemma) has the lower K_I share: 20 % vs 80 % over 30 facts each
    cs = pd.DataFrame(_cs("gemma3-270m", [1] * 6 + [0] * 24) + _cs("smollm2-135m", [1] * 24 + [0] * 6))
    m = K.model_order_claim(cs, SIZES, **THETA)
    assert m["estimate"] == pytest.approx(0.2 - 0.8) and m["low"] < m["estimate"] < m["high"] < 0 and m["n"] == 30
    row = V.claim_row("model_order", "all", m["estimate"], m["low"], m["high"], m["n"], detail=m["detail"])
    assert row["verdict"] == V.HOLDS and "gemma3-270m" in row["this_run"] and "by parameters" in row["this_run"]
    # ordering by parameters would have reversed the comparison: the claim would "differ"
    swapped = {k: dict(v, mlp_neurons=v["parameters"]) for k, v in SIZES.items()}
    w = K.model_order_claim(cs, swapped, **THETA)
    assert V.judge("model_order", w["estimate"], w["low"], w["high"], w["n"]).label == V.DIFFERS
    one = K.model_order_claim(cs[cs.model == "gemma3-270m"], {"gemma3-270m": SIZES["gemma3-270m"]}, **THETA)
    assert V.judge("model_order", why_not=one["why_not"]).label == V.NOT_MEASURABLE and "two models" in one["why_not"]


@pytest.mark.book
def test_chapter02_results(book12):
    data = results(book12, NAME)
    nums, run = data["numbers"], data["run"]
    assert run["profile"] == "smoke" and run["parameters"]["compare_site"] == "pre"
    check_share_rows(nums["ki_shares"])
    assert 0.0 <= nums["share_below_static"] <= 1.0
    grid = nums["grid"]
    assert {r["t"] for r in grid} == set(run["parameters"]["t_grid"])
    assert {r["theta"] for r in grid} == set(run["parameters"]["theta_grid"])
    for r in grid:
        assert r["share_ki"] is None or 0.0 <= r["share_ki"] <= 1.0
    # monotone in θ by construction
    by_t: dict = {}
    for r in grid:
        if r["method"] == "∩" and r["share_ki"] is not None:
            by_t.setdefault(r["t"], []).append((r["theta"], r["share_ki"]))
    for pairs in by_t.values():
        shares = [s for _, s in sorted(pairs)]
        assert shares == sorted(shares)
    assert nums["site_facts"] >= 1 and {r["site"] for r in nums["site_summary"]} == {"post", "pre"}
    assert nums["site_mean_jaccard"] is None or 0.0 <= nums["site_mean_jaccard"] <= 1.0
    check_figures(book12, nums["figures"])


@pytest.mark.book
def test_chapter02_uses_chapter01_data(book12):
    """Chapters 01 and 02 localize the same facts with the same parameters (so 02 reads 01's cached
    attributions): the same facts and the same consistency scores."""
    f01 = results(book12, "01_kl_reexamination")["numbers"]
    f02 = results(book12, NAME)["numbers"]
    assert f01["n_facts"] == f02["n_facts"] and f01["share_below_static"] == pytest.approx(f02["share_below_static"])
    shares01 = {(r["method"], r["threshold_kind"]): r["share_ki"] for r in f01["ki_shares"]}
    shares02 = {(r["method"], r["threshold_kind"]): r["share_ki"] for r in f02["ki_shares"]}
    assert set(shares01) == set(shares02)
    for key, a in shares01.items():
        b = shares02[key]
        assert (a is None and b is None) or a == pytest.approx(b), key


@pytest.mark.book
def test_glue_equals_json(book12):
    check_glue(book12, NAME)


@pytest.mark.book
def test_claims_judged_by_the_one_rule(book12):
    rows = check_claims(book12, NAME)
    # one model: the size ordering is not measurable, and the row says why
    order = [r for r in rows if r["claim"] == "model_order"]
    assert len(order) == 1 and order[0]["verdict"] == "not measurable here" and "two models" in order[0]["reason"]
    assert "MLP neurons" in order[0]["this_run"]
