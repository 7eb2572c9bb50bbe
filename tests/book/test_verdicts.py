import math
import tomllib

import pytest

from kqlib.book.claims import verdicts as V


def test_claims_file_lists_the_nine_headline_claims_with_required_fields():
    cs = V.claims()
    assert {c.headline for c in cs} >= set(range(1, 10))
    for c in cs:
        assert c.id and c.chapter[:2].isdigit() and c.text and c.paper and c.source and c.quantity
        assert any(tag in c.source for tag in ("[C", "[R", "[I")), c.id
        assert c.direction in V.DIRECTIONS and c.format in ("pct", "num", "p")
    with open(V.CLAIMS_FILE, "rb") as f:
        assert len(tomllib.load(f)["claim"]) == len(cs)  # no duplicate ids swallowed
    assert V.claims("03") and all(c.chapter.startswith("03") for c in V.claims("03"))


def test_judge_four_verdicts():
    c = V.claim("ki_majority")  # greater than 0.5
    assert V.judge(c, 0.8, 0.6, 0.9, 20).label == V.HOLDS
    # a bootstrap interval of 3 facts is no evidence; a Wilson interval of 3 facts is valid
    small = V.judge(c, 0.9, 0.7, 1.0, 3)
    assert small.label == V.INCONCLUSIVE and small.n_needed >= V.MIN_BOOTSTRAP_N and "too few" in small.reason
    assert V.judge(c, 0.9, 0.7, 1.0, 3, interval="wilson").label == V.HOLDS
    assert V.judge(c, 0.2, 0.1, 0.4, 20).label == V.DIFFERS
    inc = V.judge(c, 0.6, 0.4, 0.8, 20)
    # facts needed for the paper's effect (0.77 vs 0.5) at 80 % power: se = 0.2 / z.975
    need = math.ceil(20 * ((V._z(0.975) + V._z(0.8)) * (0.2 / V._z(0.975)) / 0.27) ** 2)
    assert inc.label == V.INCONCLUSIVE and inc.n_needed == need == 23 and "23 facts" in inc.reason
    # never when the estimate lies on the other side, never for a claim without a pre-stated effect
    other = V.judge(c, 0.45, 0.3, 0.6, 20)
    assert other.n_needed is None and "other side" in other.reason and "would" not in other.reason
    assert V.judge("mapping_own_vs_intersection", 0.1, -0.1, 0.3, 20).n_needed is None
    nm = V.judge(c, 0.6, 0.4, 0.8, 20, why_not="needs two models")
    assert nm.label == V.NOT_MEASURABLE and nm.reason == "needs two models"
    assert V.judge(c, None).label == V.NOT_MEASURABLE
    # one unit: a degenerate interval is no evidence; nothing is measurable from one fact
    one = V.judge(c, 1.0, 1.0, 1.0, 1)
    assert one.label == V.NOT_MEASURABLE and "fewer than 2" in one.reason and one.n_needed == 2
    # "less" claims mirror
    m = V.claim("model_order")
    assert V.judge(m, -0.3, -0.5, -0.1, 30).label == V.HOLDS
    assert V.judge(m, 0.3, 0.1, 0.5, 30).label == V.DIFFERS
    # untestable claims carry their reason
    u = V.judge("mapping_gap_smaller_kc", 0.1, 0.0, 0.2, 10)
    assert u.label == V.NOT_MEASURABLE and "construction" in u.reason


def test_interval_and_test_must_agree():
    c = V.claim("mapping_own_vs_intersection")  # greater than 0, α = 0.05
    assert V.judge(c, 0.3, 0.1, 0.5, 10, p=0.01).label == V.HOLDS
    v = V.judge(c, 0.3, 0.1, 0.5, 10, p=0.2)
    assert v.label == V.INCONCLUSIVE and "test" in v.reason
    assert V.judge(c, -0.3, -0.5, -0.1, 10, p=0.01).label == V.DIFFERS


def test_judge_with_a_p_value():
    w = V.claim("mapping_own_vs_intersection")  # alpha 0.05
    assert V.judge(w, 0.4, p=1e-9, n=50).label == V.HOLDS
    inc = V.judge(w, 0.4, p=0.2, n=50)
    assert inc.label == V.INCONCLUSIVE and inc.n_needed is None
    assert V.judge(w, -0.4, p=1e-9, n=50).label == V.DIFFERS


def test_groups_cut_from_the_tested_statistic_are_untestable():
    v = V.judge("welch_separation", 0.4, p=1e-12, n=50)
    assert v.label == V.NOT_MEASURABLE and "cut from the tested statistic" in v.reason


def test_shares_outside_the_unit_interval_and_unknown_intervals_are_refused():
    from kqlib.errors import ParameterError

    with pytest.raises(ParameterError, match="outside"):
        V.judge("ki_majority", 1.2, 0.9, 1.3, 20)
    with pytest.raises(ParameterError, match="interval must be"):
        V.judge("ki_majority", 0.6, 0.5, 0.7, 20, interval="normal")
    # a difference of shares may be negative
    assert V.judge("model_order", -0.3, -0.5, -0.1, 30, interval="newcombe").label == V.HOLDS


def test_one_primary_claim_per_headline_and_holm_across_a_models_family():
    heads = [c.headline for c in V.claims() if c.primary]
    assert sorted(heads) == list(range(1, 10))
    rows = [V.claim_row("cas_vs_ni", "m", 0.05, 0.001, 0.099, 30),  # p ≈ 0.045 alone
            V.claim_row("synapse_act_suppress", "m", 0.5, 0.3, 0.7, 30),  # p tiny
            V.claim_row("cas_vs_ng", "m", 0.05, 0.001, 0.099, 30),  # secondary: not adjusted
            V.claim_row("edit_gen_gap", "m", 0.1, -0.1, 0.3, 30),
            V.claim_row("model_order", "all", why_not="one model")]
    out = {r["claim"]: r for r in V.holm_family(rows)}
    assert out["cas_vs_ni"]["verdict_unadjusted"] == V.HOLDS and out["cas_vs_ni"]["verdict"] == V.INCONCLUSIVE
    assert out["cas_vs_ni"]["family"] == 3 and out["cas_vs_ni"]["p_holm"] > 0.05 and "Holm" in out["cas_vs_ni"]["reason"]
    assert out["synapse_act_suppress"]["verdict"] == V.HOLDS
    assert out["cas_vs_ng"]["role"] == "secondary" and out["cas_vs_ng"]["verdict"] == V.HOLDS
    assert out["model_order"]["p_holm"] is None
    p = V.row_p(rows[0])
    assert p == pytest.approx(2 * (1 - __import__("scipy").stats.norm.cdf(0.05 / (0.098 / 2 / V._z(0.975)))))


def test_claim_row_and_table_use_one_vocabulary_and_colour():
    row = V.claim_row("cas_vs_ni", "m", 0.05, 0.01, 0.09, 12)
    assert row["verdict"] == V.HOLDS and row["n"] == 12 and "[+0.010, +0.090]" in row["this_run"]
    rows = [row, V.claim_row("cas_vs_ng", "m", 0.0, -0.1, 0.1, 12), V.claim_row("cas_llama3_erasure", why_not="x")]
    html = V.table(rows, link=True).to_html()
    for label in (V.HOLDS, V.INCONCLUSIVE, V.NOT_MEASURABLE):
        assert V.COLOURS[label] in html
    assert 'href="05_cas_editing.html#paper-vs-this-run"' in html
    assert {r["verdict"] for r in rows} <= set(V.VERDICTS)
