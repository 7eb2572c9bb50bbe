"""Chapter 01 (Is knowledge localized?): the module's Gen gap on a toy whose answer is known, and the notebook
executed with the smoke profile (fixture ``book12``: chapters 01 and 02 in one copy of the book)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from chapter_checks import check_claims, check_figures, check_glue, check_share_rows, results
from kqlib.book.chapters import ch01_kl_reexamination as K

NAME = "01_kl_reexamination"


def test_gen_gap_is_stratified_by_relation():
    """Class confounded with the relation (P1 all K_C with high Gen, P2 all K_I with low Gen): a pooled gap of
    +0.8 would be the relation's, not the class's; within relations there is nothing to compare."""
    rows = [dict(model="m", task="erase", relation=r, fact_id=f"{r}_{i}", gen=g)
            for r, g in (("P1", 0.9), ("P2", 0.1)) for i in range(4)]
    edits = pd.DataFrame(rows)
    classes = {("m", f): ("K_C" if f.startswith("P1") else "K_I") for f in edits.fact_id}
    out = K.gen_gap(edits, classes, "m")
    assert "confounded with the relation" in out["why_not"]
    # both classes within each of 6 relations, K_C 0.2 above K_I everywhere, relations at different levels
    rows = [dict(model="m", task="erase", relation=f"P{r}", fact_id=f"P{r}_{c}_{i}", gen=r / 10 + (0.2 if c == "C" else 0))
            for r in range(6) for c in "CI" for i in range(2)]
    edits = pd.DataFrame(rows)
    classes = {("m", f): f"K_{f.split('_')[1]}" for f in edits.fact_id}
    out = K.gen_gap(edits, classes, "m")
    assert out["estimate"] == pytest.approx(0.2) and out["n"] == 6 and out["unit"] == "relations"


@pytest.mark.book
def test_chapter01_results(book12):
    data = results(book12, NAME)
    nums, run = data["numbers"], data["run"]
    assert run["profile"] == "smoke" and run["parameters"]["methods"] == ["ig", "sig", "amig"]
    assert run["models"] == ["smollm2-135m"] and run["wall_time_s"] > 0
    assert nums["n_facts"] >= 2 and nums["n_queries"] >= 2 * nums["n_facts"]
    check_share_rows(nums["ki_shares"])
    methods = {r["method"] for r in nums["ki_shares"]}
    assert {"ig", "sig", "amig", "∩"} <= methods
    assert {r["threshold_kind"] for r in nums["ki_shares"]} == {"static", "otsu"}
    for r in nums["ki_shares"]:
        if r["method"] != "∩":
            # a p-value is either a probability or absent with a stated reason
            assert (r["welch_p"] is not None and 0.0 <= r["welch_p"] <= 1.0) or r["note"], r
    for key in ("ki_static_min_method", "ki_static_max_method", "share_below_static"):
        assert 0.0 <= nums[key] <= 1.0
    # Table 2: one-query edits (kqlib.paper.kl_editing), rates in [0, 1], both classes at both threshold kinds
    assert nums["n_edits"] >= 1 and 1 <= nums["n_edited_facts"] <= nums["n_facts"]
    assert {(r["threshold_kind"], r["cls"]) for r in nums["table2"]} == {
        (tk, c) for tk in ("static", "otsu") for c in ("K_C", "K_I")}
    for r in nums["table2"]:
        assert r["task"] in ("erase", "update")
        for k in ("rel", "gen", "loc", "avg"):
            assert (r[k] is None) == (r["facts"] == 0), r
            if r[k] is not None:
                assert 0.0 <= r[k] <= 1.0, r
                assert r[f"{k}_low"] - 1e-12 <= r[k] <= r[f"{k}_high"] + 1e-12, r
    assert sum(r["facts"] for r in nums["table2"] if r["threshold_kind"] == "static" and r["task"] == "erase") \
        == nums["n_edited_facts"]
    for e in nums["edits"]:
        assert e["selection"] == "N_i" and e["n_neurons"] >= 1 and e["n_neighbors"] >= 1
        assert e["edited_pattern"] not in e["neighbor_patterns"]
        for k in ("rel", "gen", "loc", "avg"):
            assert 0.0 <= e[k] <= 1.0, e
        assert e["dppl"] is None or math.isfinite(e["dppl"])  # None: the edited model's PPL overflowed
    erase_facts = {e["fact_id"] for e in nums["edits"] if e["task"] == "erase"}
    assert len(erase_facts) == nums["n_edited_facts"]
    assert set(nums["fig1_facts"]) <= {"most consistent", "least consistent"}
    # claim 1 once more under the paper's rule (paper_rule, edit_method): both rules' columns, and per model the
    # mean Jaccard of each query's two KN sets
    rules = nums["rule_sensitivity"]
    columns = set().union(*rules) - {"model", "measure"}
    assert "riemann-20" in columns and any(c.endswith("(the book's)") for c in columns), columns
    between = [r for r in rules if r["measure"].startswith("KN-set Jaccard between the rules")]
    assert {r["model"] for r in between} == set(run["models"])
    assert all(0.0 <= float(r["riemann-20"]) <= 1.0 for r in between), between
    check_figures(book12, nums["figures"])


@pytest.mark.book
def test_glue_equals_json(book12):
    check_glue(book12, NAME)


@pytest.mark.book
def test_claims_judged_by_the_one_rule(book12):
    check_claims(book12, NAME)
