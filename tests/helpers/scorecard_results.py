"""Results files in the shape the chapters write (``_build/results/<chapter>.json`` with the judged claim rows
under ``numbers["claims"]``), for the scorecard's tests (tests/book/test_scorecard.py, tests/chapters/
test_ch99_scorecard.py)."""

from __future__ import annotations

import json
from pathlib import Path

from kqlib.book.claims import verdicts as V


def write_results(results: Path, chapter: str, rows: list[dict], profile: str = "smoke",
                  finished_at: str = "now") -> None:
    """``results/<chapter>.json`` holding ``rows`` (rows of :func:`kqlib.book.claims.verdicts.claim_row`)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{chapter}.json").write_text(json.dumps(
        {"chapter": chapter, "numbers": {"claims": rows}, "run": {"profile": profile, "finished_at": finished_at}}))


def fake_results(results: Path) -> list[dict]:
    """Chapters 01 (two models) and 05 (every claim, nothing holds) run; the others not. Returns the rows written."""
    rows01 = [V.claim_row("ki_majority", "m1", 0.8, 0.6, 0.9, 20, interval="wilson"),
              V.claim_row("ki_majority", "m2", 0.3, 0.1, 0.45, 20, interval="wilson"),
              V.claim_row("welch_separation", "m1", 0.2, p=1e-9, n=20)]
    rows05 = [V.claim_row(c.id, "m1", 0.01, -0.02, 0.04, 12) for c in V.claims("05")]
    write_results(results, "01_kl_reexamination", rows01)
    write_results(results, "05_cas_editing", rows05)
    return rows01 + rows05
