"""Run a chapter's real source in this process on tiny random models whose ParaRel scan keeps 0, 1, 2 or 3
facts (the scan is replaced; everything after it runs as in the book): what a researcher's weak model meets."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib

from kqlib.paper.pararel import Dataset, Fact, FactEntry, Query, attach_answers, score_queries
from tiny import tiny_lm

REPO = Path(__file__).resolve().parents[2]

# facts of two relations in tests/helpers/tiny.py's vocabulary; each with three phrasings that end before the object
FACTS = [
    ("P36", "france", "paris", ["the capital of france is", "the capital city of france is", "france ' s capital is"]),
    ("P103", "germany", "german", ["the native language of germany is", "the mother tongue of germany is",
                                   "germany ' s native language is"]),
    ("P36", "italy", "rome", ["the capital of italy is", "the capital city of italy is", "italy ' s capital is"]),
    ("P103", "spain", "spanish", ["the native language of spain is", "the mother tongue of spain is",
                                  "spain ' s native language is"]),
]


def fake_scan(lm, n_facts: int) -> Dataset:
    """A scan of ``lm`` that keeps the first ``n_facts`` of :data:`FACTS`, each answered on its first two
    phrasings (``correct``; ranks and probabilities are the model's own); the scan counts say so."""
    entries, scan = [], {}
    for i, (rel, subject, obj, prompts) in enumerate(FACTS):
        s = scan.setdefault(rel, dict(facts=2, patterns=3, scanned=0, evaluated=0, kept=0, dropped_multi_token=0,
                                      dropped_few_queries=0, dropped_not_answered=0, seconds=0.0))
        s["scanned"] += 1
        s["evaluated"] += 1
        if i >= n_facts:
            s["dropped_not_answered"] += 1
            continue
        qs = [Query(f"{subject}-{rel}", rel, subject, obj, p, j) for j, p in enumerate(prompts)]
        scored = score_queries(lm, attach_answers(lm, qs))
        scored = [q.__class__(**{**q.__dict__, "correct": j < 2}) for j, q in enumerate(scored)]
        entries.append(FactEntry(Fact(rel, subject, obj, f"{subject}-{rel}"), scored))
        s["kept"] += 1
    return Dataset(entries, dict(model=lm.name, min_correct=2, relations=list(scan), cached=False), scan)


def run_chapter(name: str, n_facts: int, monkeypatch, tmp_path, models=("tiny-a",), **params) -> dict:
    """Execute ``book/<name>.py`` cell by cell (its parameters cell replaced by ``params`` over the smoke
    defaults) with every model a tiny llama whose scan keeps ``n_facts`` facts (a dict ``{model: n}`` gives each
    its own). Returns the namespace; ``ns["__shown__"]`` holds (last line, value) of every cell that displays one."""
    import jupytext

    import kqlib
    from kqlib.paper import scans

    matplotlib.use("Agg")
    counts = n_facts if isinstance(n_facts, dict) else {m: n_facts for m in models}
    loaded = {}

    def load(model, *a, **k):
        if model not in loaded:
            loaded[model] = tiny_lm("llama")
            loaded[model].name = model
        return loaded[model]

    monkeypatch.setattr(kqlib, "load", load)
    monkeypatch.setattr(scans, "scan", lambda lm, *a, **k: fake_scan(lm, counts[lm.name]))
    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KQ_BUILD_DIR", str(tmp_path / "_build"))
    monkeypatch.chdir(REPO / "book")
    nb = jupytext.read(REPO / "book" / f"{name}.py")
    shown: list = []
    ns: dict = {"__name__": "__chapter__", "__shown__": shown}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src = cell.source
        if "parameters" in cell.metadata.get("tags", []):
            exec(compile(src, f"{name}:parameters", "exec"), ns)
            ns.update(models=list(models), **params)
            continue
        src = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
        tree = ast.parse(src)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, f"{name}:cell", "exec"), ns)
        if last is not None:  # what the notebook would display
            shown.append((src.strip().splitlines()[-1][:80], eval(compile(ast.Expression(last.value), name, "eval"), ns)))
    return ns
