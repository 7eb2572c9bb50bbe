"""The paper's claims (``kqlib/book/claims/claims.toml``) and the one rule that turns a measurement into a verdict.

A claim says on which side of a null value (``direction``) the paper's effect lies. A measurement is an
estimate with its 95 % interval (a bootstrap over facts) or, for a test, a p-value; n is the number of units
(facts) behind it. :func:`judge` returns one of four verdicts:

* **holds** -- the interval excludes the null on the paper's side (for a test: p < α, effect on that side);
* **differs** -- the interval excludes the null on the other side (the effect is reversed);
* **inconclusive** -- neither; where the claim states the paper's effect (claims.toml ``effect``) and the
  estimate lies on the paper's side, the verdict states about how many units would give 80 % power for that
  effect (never a post-hoc count at the observed effect);
* **not measurable here** -- with the reason (e.g. the claim needs two models, or is not testable this way).

Chapters call :func:`claim_row` for each claim they measure, put the rows in their results JSON under
``"claims"``, and show :func:`table` ("Paper vs this run"); the scorecard collects the same rows.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from kqlib.book.toc import toc_documents
from kqlib.errors import ParameterError
from kqlib.paper.stats import holm

CLAIMS_FILE = Path(__file__).with_name("claims.toml")

HOLDS, DIFFERS, INCONCLUSIVE, NOT_MEASURABLE = "holds", "differs", "inconclusive", "not measurable here"
VERDICTS = (HOLDS, DIFFERS, INCONCLUSIVE, NOT_MEASURABLE)
#: One colour per verdict, used by every table of the book (chapters and scorecard).
COLOURS = {HOLDS: "#d4edda", DIFFERS: "#f8d7da", INCONCLUSIVE: "#e2e3e5", NOT_MEASURABLE: "#fff3cd"}
DIRECTIONS = ("greater", "less", "none")


@dataclass(frozen=True)
class Claim:
    id: str
    chapter: str
    text: str
    paper: str
    source: str
    quantity: str
    direction: str
    null: float = 0.0
    alpha: float = 0.05
    headline: int = 0
    format: str = "num"
    untestable: str = ""
    effect: float | None = None  # the paper's pre-stated effect: "facts needed" only for it (80 % power)
    share: bool = False  # the estimate is a share: values outside [0, 1] are refused
    extra: dict = field(default_factory=dict)

    @property
    def primary(self) -> bool:
        """The one row of a headline result (spec §6) per model; every other claim is secondary."""
        return self.headline > 0


@lru_cache(maxsize=1)
def _load() -> dict[str, Claim]:
    """The claims of :data:`CLAIMS_FILE`, validated: every entry a table with the required text fields, numbers
    where numbers belong, a known format, and a chapter that the book's ``_toc.yml`` lists (when the file sits in
    a book checkout); an error names the file, the claim (id, else its position) and the field."""
    try:
        with open(CLAIMS_FILE, "rb") as f:
            raw = tomllib.load(f).get("claim", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParameterError(f"{CLAIMS_FILE}: cannot be read as TOML ({exc}); restore it from the repository.") from None
    toc = Path(__file__).resolve().parents[3] / "_toc.yml"
    chapters = None
    if toc.exists():

        chapters = {Path(doc).name for doc in toc_documents(toc.parent)}
    required = ("id", "chapter", "text", "paper", "source", "quantity", "direction")
    numbers = {"null": (int, float), "alpha": (int, float), "headline": (int,)}
    out: dict[str, Claim] = {}
    known = set(Claim.__dataclass_fields__) - {"extra"}
    for i, entry in enumerate(raw if isinstance(raw, list) else [raw]):
        if not isinstance(entry, dict):
            raise ParameterError(f"{CLAIMS_FILE}: entry {i + 1} is not a [[claim]] table")
        where = f"{CLAIMS_FILE}: claim {entry.get('id')!r}" if isinstance(entry.get("id"), str) else \
            f"{CLAIMS_FILE}: claim number {i + 1} (no id)"
        for key in required:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ParameterError(f"{where}: field {key!r} is {'missing' if key not in entry else 'not a text'}; "
                                     f"every claim needs {', '.join(required)}")
        for key, kinds in numbers.items():
            if key in entry and (not isinstance(entry[key], kinds) or isinstance(entry[key], bool)):
                raise ParameterError(f"{where}: field {key!r} = {entry[key]!r} is not a number")
        if entry.get("format", "num") not in ("num", "pct", "p"):
            raise ParameterError(f"{where}: field 'format' = {entry['format']!r} is not one of num, pct, p")
        if chapters is not None and entry["chapter"] not in chapters:
            raise ParameterError(f"{where}: field 'chapter' = {entry['chapter']!r} is not a chapter of {toc} "
                                 f"(chapters: {', '.join(sorted(c for c in chapters if c[:2].isdigit()))})")
        c = Claim(**{k: v for k, v in entry.items() if k in known},
                  extra={k: v for k, v in entry.items() if k not in known})
        if c.id in out:
            raise ParameterError(f"{CLAIMS_FILE}: claim id {c.id!r} is listed twice")
        if c.direction not in DIRECTIONS:
            raise ParameterError(f"{CLAIMS_FILE}: claim {c.id!r} has direction {c.direction!r}")
        if c.direction == "none" and not c.untestable:
            raise ParameterError(f"{CLAIMS_FILE}: claim {c.id!r} is not testable but gives no reason")
        if c.headline and any(o.headline == c.headline for o in out.values()):
            raise ParameterError(f"{CLAIMS_FILE}: headline {c.headline} has two primary claims ({c.id!r})")
        out[c.id] = c
    return out


def claims(chapter: str | None = None) -> list[Claim]:
    """Every claim of ``claims.toml`` (in file order), or those of one chapter (file stem or its prefix)."""
    return [c for c in _load().values() if chapter is None or c.chapter == chapter or c.chapter.startswith(chapter)]


def claim(claim_id: str) -> Claim:
    try:
        return _load()[claim_id]
    except KeyError:
        raise ParameterError(f"no claim {claim_id!r} in {CLAIMS_FILE}; known: {', '.join(_load())}") from None


# ------------------------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    label: str  # one of VERDICTS
    reason: str = ""
    n_needed: int | None = None

    @property
    def text(self) -> str:
        return self.label + (f": {self.reason}" if self.reason else "")


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _z(q: float) -> float:
    from scipy.stats import norm  # heavy: scipy, not loaded by `import kqlib` or `kq`

    return float(norm.ppf(q))


MIN_BOOTSTRAP_N = 5  # below this many units a percentile-bootstrap interval says little (n = 2: two values)
INTERVALS = ("bootstrap", "wilson", "exact", "newcombe")  # the last three are valid for any n >= 2
POWER = 0.8  # the power at which "facts needed" is computed for a claim's pre-stated effect


def judge(c: Claim | str, estimate=None, low=None, high=None, n: int | None = None, *, p=None,
          why_not: str | None = None, unit: str = "facts", interval: str = "bootstrap") -> Verdict:
    """The verdict on claim ``c`` for an estimate with its interval [low, high] over n units, and/or the p of a
    test. ``why_not``: the reason it cannot be measured here. ``interval``: "bootstrap" (a percentile
    bootstrap: needs at least :data:`MIN_BOOTSTRAP_N` units) or "wilson"/"exact" (valid for any n ≥ 2).

    With an interval: holds / differs when it excludes the null on the paper's / the other side, and, when a
    test's p is given too, the test agrees (p < the claim's α); otherwise inconclusive. With a p only: holds /
    differs when p < α with the effect on the paper's / the other side."""
    c = claim(c) if isinstance(c, str) else c
    if c.share:
        bad = [x for x in (estimate, low, high) if _finite(x) and not -1e-9 <= float(x) <= 1 + 1e-9]
        if bad:
            raise ParameterError(f"claim {c.id!r} measures a share, got {bad} outside [0, 1]")
    if why_not:
        return Verdict(NOT_MEASURABLE, why_not)
    if c.direction == "none":
        return Verdict(NOT_MEASURABLE, c.untestable)
    if not _finite(estimate):
        return Verdict(NOT_MEASURABLE, "no estimate (no units to measure)")
    if interval not in INTERVALS:
        raise ParameterError(f"interval must be one of {INTERVALS}, got {interval!r}")
    est, null = float(estimate), float(c.null)
    sign = 1.0 if c.direction == "greater" else -1.0
    if n is not None and int(n) < 2:
        return Verdict(NOT_MEASURABLE, f"{int(n)} {unit}: no interval from fewer than 2 (a model that knows "
                                       f"few facts: see `kq data --model`)", 2)
    test = "" if not _finite(p) else f"p = {float(p):.2g}"
    sig = None if not _finite(p) else float(p) < c.alpha
    if _finite(low) and _finite(high):
        lo, hi = float(low), float(high)
        half = (hi - lo) / 2.0
        if interval == "bootstrap" and n is not None and int(n) < MIN_BOOTSTRAP_N:
            return _inconclusive(c, n, half, unit, est, sign,
                                 f"{int(n)} {unit}: too few for a bootstrap interval (needs {MIN_BOOTSTRAP_N})",
                                 floor=MIN_BOOTSTRAP_N)
        side = (lo - null) * sign > 0 and (hi - null) * sign > 0
        other = (lo - null) * sign < 0 and (hi - null) * sign < 0
        if (side or other) and sig is False:
            return _inconclusive(c, n, half, unit, est, sign,
                                 f"the interval excludes the null but the test over {unit} does not ({test})")
        if side:
            return Verdict(HOLDS)
        if other:
            return Verdict(DIFFERS, "the interval excludes the null on the other side")
        return _inconclusive(c, n, half, unit, est, sign, "the interval includes the null")
    if sig is not None:
        if sig:
            return Verdict(HOLDS) if (est - null) * sign > 0 else Verdict(DIFFERS, "significant, reversed effect")
        return _inconclusive(c, n, None, unit, est, sign, f"not significant at α = {c.alpha:g} ({test})")
    return Verdict(NOT_MEASURABLE, "no interval and no test (too few units)")


def _inconclusive(c: Claim, n, half, unit: str, est: float, sign: float, why: str, floor: int = 0) -> Verdict:
    """Inconclusive, with "about N units would be needed" only for the claim's pre-stated effect (claims.toml
    ``effect``), at :data:`POWER` and the claim's α, from the interval's standard error
    se = half-width / z_{0.975}: N = n·((z_{1−α/2} + z_{power})·se / |effect − null|)², never when the estimate
    lies on the other side (or equals the null)."""
    null = float(c.null)
    side = ("" if (est - null) * sign > 0 else " (the estimate equals the null)" if est == null
            else " (the estimate lies on the other side)")
    if floor:
        return Verdict(INCONCLUSIVE, f"{why}{side}", floor)
    if (c.effect is None or side or n is None or half is None or not _finite(half) or half <= 0
            or float(c.effect) == null):
        return Verdict(INCONCLUSIVE, f"{why}{side}")
    se = float(half) / _z(0.975)
    needed = max(int(n) + 1, math.ceil(int(n) * ((_z(1 - c.alpha / 2) + _z(POWER)) * se / abs(float(c.effect) - null)) ** 2))
    return Verdict(INCONCLUSIVE, f"{why}; about {needed} {unit} would give {POWER:.0%} power for the paper's "
                                 f"effect ({float(c.effect):g} against {null:g}; n = {int(n)})", needed)


# ------------------------------------------------------------------------------------------ table rows


def fmt_value(x, kind: str = "num") -> str:
    if not _finite(x):
        return "–"
    x = float(x)
    if kind == "pct":
        return f"{x:.0%}"
    if kind == "p":
        return f"{x:.1e}"
    return f"{x:+.3f}"


def estimate_text(c: Claim, estimate, low=None, high=None, n=None, unit: str = "facts", p=None) -> str:
    if not _finite(estimate):
        return "–"
    out = fmt_value(estimate, c.format)
    if _finite(low) and _finite(high):
        out += f" [{fmt_value(low, c.format)}, {fmt_value(high, c.format)}]"
    if _finite(p) and c.format != "p":
        out += f", p = {float(p):.2g}"
    if n is not None:
        out += f" (n = {int(n)} {unit})"
    return out


def _plain(x):
    return float(x) if _finite(x) else None


def measurement(claim_id: str, model: str = "all", estimate=None, low=None, high=None, n: int | None = None,
                **kw) -> dict[str, Any]:
    """A claim's measurement as a chapter module returns it (not judged yet): the arguments of
    :func:`claim_row`, as one dict. The notebook hands a list of them to ``Chapter.claims``, which judges each
    (the one verdict rule) and keeps the rows; a chapter module never holds the ``Chapter`` itself."""
    claim(claim_id)  # an unknown id is an error here, where the module measured it
    return {"claim_id": claim_id, "model": model, "estimate": estimate, "low": low, "high": high, "n": n, **kw}


def claim_row(claim_id: str, model: str = "all", estimate=None, low=None, high=None, n: int | None = None, *,
              p=None, unit: str = "facts", why_not: str | None = None, detail: str = "",
              interval: str = "bootstrap") -> dict[str, Any]:
    """One JSON-ready row: the claim (id, chapter, text, paper, source, quantity), this run's measurement
    (model, estimate, ci_low, ci_high, n, unit, p), the verdict, its reason and n_needed, and ``this_run``
    (the estimate as text, plus ``detail``)."""
    c = claim(claim_id)
    v = judge(c, estimate, low, high, n, p=p, why_not=why_not, unit=unit, interval=interval)
    text = estimate_text(c, estimate, low, high, n, unit, p)
    return {"claim": c.id, "headline": c.headline, "chapter": c.chapter, "text": c.text, "paper": c.paper,
            "source": c.source, "quantity": c.quantity, "model": model, "estimate": _plain(estimate),
            "ci_low": _plain(low), "ci_high": _plain(high), "n": None if n is None else int(n), "unit": unit,
            "p": _plain(p), "interval": interval, "verdict": v.label, "reason": v.reason, "n_needed": v.n_needed,
            "why_not": why_not or None,
            "this_run": text + (f"; {detail}" if detail else "")}


def row_p(row: Mapping[str, Any]) -> float | None:
    """The two-sided p of a judged row: its test's p, else from its 95 % interval by the normal approximation
    z = (estimate − null) / se, se = (high − low) / (2·z_{0.975}); None when neither is there."""
    if _finite(row.get("p")):
        return float(row["p"])
    est, lo, hi = row.get("estimate"), row.get("ci_low"), row.get("ci_high")
    if not (_finite(est) and _finite(lo) and _finite(hi)) or float(hi) <= float(lo):
        return None
    se = (float(hi) - float(lo)) / (2 * _z(0.975))
    from scipy.stats import norm  # heavy: scipy, not loaded by `import kqlib` or `kq`

    return float(2 * norm.sf(abs(float(est) - float(claim(row["claim"]).null)) / se))


def holm_family(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows with ``role`` ("primary" for the headline claims, else "secondary") and, for the primary rows,
    ``p_holm``: Holm-adjusted across the primary rows of the same model (:func:`kqlib.paper.stats.holm`; rows
    judged "not measurable here" do not count) and ``family`` (its size). A primary "holds" or "differs" whose
    adjusted p is not below the claim's α becomes "inconclusive" (``verdict_unadjusted`` keeps the chapter's)."""

    out = [dict(r, role="primary" if claim(r["claim"]).primary else "secondary", p_holm=None, family=None)
           for r in rows]
    for model in sorted({r["model"] for r in out}, key=str):
        fam = [r for r in out if r["role"] == "primary" and r["model"] == model and r["verdict"] != NOT_MEASURABLE]
        ps = [row_p(r) for r in fam]
        adj = holm([math.nan if p is None else p for p in ps])
        m = sum(p is not None for p in ps)
        for r, a in zip(fam, adj):
            r["p_holm"], r["family"] = (float(a), m) if math.isfinite(a) else (None, m)
            r["verdict_unadjusted"] = r["verdict"]
            if r["verdict"] in (HOLDS, DIFFERS) and (r["p_holm"] is None or r["p_holm"] >= claim(r["claim"]).alpha):
                r["verdict"] = INCONCLUSIVE
                r["reason"] = (f"{r['verdict_unadjusted']} before adjustment; Holm-adjusted p = "
                               f"{fmt_value(r['p_holm'], 'p')} across the {m} primary claims of {model}")
    return out


def shade(value) -> str:
    key = str(value).strip().lower()
    for label, colour in COLOURS.items():
        if key.startswith(label):
            return f"background-color: {colour}"
    return ""


def frame(rows: Iterable[Mapping[str, Any]], link: bool = False):
    """Rows of :func:`claim_row` as the "Paper vs this run" DataFrame: claim, model, paper (value and source),
    this run, verdict (label and reason); ``link`` adds a link to the chapter's section."""
    out = []
    for r in rows:
        row = {"claim": r["text"], "model": r["model"], "paper": f"{r['paper']} ({r['source']})",
               "this run": r["this_run"], "verdict": r["verdict"] + (f": {r['reason']}" if r["reason"] else "")}
        if link:
            row["chapter"] = f'<a href="{r["chapter"]}.html#paper-vs-this-run">{r["chapter"][:2]}</a>'
        out.append(row)
    cols = ["claim", "model", "paper", "this run", "verdict"] + (["chapter"] if link else [])
    return pd.DataFrame(out, columns=cols)


def table(rows: Sequence[Mapping[str, Any]], link: bool = False):
    """The styled "Paper vs this run" table (verdict cells coloured by :data:`COLOURS`)."""
    df = frame(rows, link=link)
    styled = df.style.hide(axis="index").map(shade, subset=["verdict"])
    return styled


def legend() -> str:
    """The verdict vocabulary as one Markdown line."""
    return ("**holds**: the 95 % interval excludes the null on the paper's side; **differs**: it excludes it on "
            "the other side; **inconclusive**: neither (with the units that would give 80 % power for the "
            "paper's effect, where the paper states one); **not measurable here**: with the reason.")
