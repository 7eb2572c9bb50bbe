import math
import tomllib

import pytest

from kqlib.book import verdicts as V


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
    assert inc.label == V.INCONCLUSIVE and inc.n_needed == math.ceil(20 * (0.2 / 0.1) ** 2) == 80
    assert "80 facts" in inc.reason
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
    w = V.claim("welch_separation")  # alpha 1e-6
    assert V.judge(w, 0.4, p=1e-9, n=50).label == V.HOLDS
    inc = V.judge(w, 0.4, p=1e-3, n=50)
    assert inc.label == V.INCONCLUSIVE and inc.n_needed > 50
    assert V.judge(w, -0.4, p=1e-9, n=50).label == V.DIFFERS


def test_claim_row_and_table_use_one_vocabulary_and_colour():
    row = V.claim_row("cas_vs_ni", "m", 0.05, 0.01, 0.09, 12)
    assert row["verdict"] == V.HOLDS and row["n"] == 12 and "[+0.010, +0.090]" in row["this_run"]
    rows = [row, V.claim_row("cas_vs_ng", "m", 0.0, -0.1, 0.1, 12), V.claim_row("cas_llama3_erasure", why_not="x")]
    html = V.table(rows, link=True).to_html()
    for label in (V.HOLDS, V.INCONCLUSIVE, V.NOT_MEASURABLE):
        assert V.COLOURS[label] in html
    assert 'href="05_cas_editing.html#paper-vs-this-run"' in html
    assert {r["verdict"] for r in rows} <= set(V.VERDICTS)
