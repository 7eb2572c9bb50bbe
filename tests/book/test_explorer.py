"""Data downloads, "reproduce this" and the fact explorer (kqlib.book.site.data_export, kqlib.book.site.explorer), on synthetic
chapter data (fast, no model), and on a built book when ``KQ_BROWSER_BOOK`` names one."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from kqlib.paper import consistency as C
from kqlib.book.site import data_export
from kqlib.book.site import explorer
from kqlib.book import report
from kqlib.errors import ParameterError
from kqlib.book.profiles import parameters_for, parse_overrides

CHAPTER_SOURCE = '''\
# %% [markdown]
# # A chapter

# %% tags=["parameters"]
models = ["smollm2-135m"]
steps = 20
relations = []
profile = "smoke"

# %%
print(steps)
'''


@pytest.fixture
def build(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "_build"
    monkeypatch.setenv("KQ_BUILD_DIR", str(out))
    return out


def _synthetic_run(seed: int = 0, n_facts: int = 6, methods=("ig", "sig")):
    """KN sets, queries and facts of two models; returns (kn frame, queries frame, {query key: set})."""
    rng = random.Random(seed)
    kn_rows, q_rows, sets = [], [], {}
    for model in ("m-small", "m-large"):
        for f in range(n_facts):
            fact_id = f"fact-{f}"
            relation = "P36" if f % 2 else "P103"
            k = rng.randint(2, 5)
            for pi in range(k):
                q_rows.append(dict(model=model, relation=relation, fact_id=fact_id, subject=f"Subject {f}",
                                   obj=f"Object {f}", pattern_index=pi, prompt=f"Prompt {pi} about Subject {f} is",
                                   prob=rng.random(), rank=rng.randint(1, 9), answer_ids=[rng.randint(0, 99)]))
                for method in methods:
                    chosen = {(rng.randint(0, 3), rng.randint(0, 6)) for _ in range(rng.randint(0, 6))}
                    sets[(model, method, fact_id, pi)] = chosen
                    base = dict(model=model, method=method, relation=relation, fact_id=fact_id, pattern_index=pi,
                                prompt=f"Prompt {pi} about Subject {f} is", target_id=1)
                    if not chosen:
                        continue
                    scores = {n: rng.random() + 0.1 for n in chosen}
                    top = max(scores.values())
                    for (layer, neuron), s in scores.items():
                        kn_rows.append({**base, "layer": layer, "neuron": neuron, "score": s, "rel_score": s / top})
    kn = pd.DataFrame(kn_rows)
    queries = pd.DataFrame(q_rows)
    qframe = pd.DataFrame([dict(model=m, method=k, relation="", fact_id=f, pattern_index=p)
                           for (m, k, f, p) in sets])
    return kn, queries, qframe, sets


def test_write_table_roundtrip_and_manifest(build):
    df = pd.DataFrame({"model": ["a", "b", "c"], "cs2": [0.5, float("nan"), 1.0], "answer_ids": [[1, 2], [3], []],
                       "method": pd.Categorical(["ig", "sig", "ig"]), "subject": ["NA", "None", "x"],
                       "flipped": [True, False, True], "weird": [1, 2, 3]})
    path = data_export.write_table("09_demo", "demo", df, schema={"weird": "a documented column"}, figure="09_fig")
    assert path == build / "data" / "09_demo" / "demo.csv"
    manifest = data_export.read_manifest(path.parent)
    t = manifest["tables"]["demo"]
    assert t["rows"] == 3 and t["figures"] == ["09_fig"]
    types = {c["name"]: c["dtype"] for c in t["columns"]}
    assert types == {"model": "str", "cs2": "float", "answer_ids": "list (JSON)", "method": "str", "subject": "str",
                     "flipped": "bool", "weird": "int"}
    assert "weird (int: a documented column)" in t["schema"] and "cs2 (float: CS2" in t["schema"]
    back = data_export.read_table(path.parent, "demo")
    assert back["answer_ids"].tolist() == [[1, 2], [3], []]
    assert back["subject"].tolist() == ["NA", "None", "x"]  # not read as missing values
    assert back["cs2"].iloc[0] == 0.5 and np.isnan(back["cs2"].iloc[1])
    # a second table keeps the first in the manifest; a schema for a missing column is refused
    data_export.write_table("09_demo", "other", df[["model"]])
    assert set(data_export.read_manifest(path.parent)["tables"]) == {"demo", "other"}
    with pytest.raises(ParameterError):
        data_export.write_table("09_demo", "bad", df, schema={"nope": "x"})
    with pytest.raises(ParameterError):
        data_export.write_table("09_demo", "../escape", df)


def test_explorer_numbers_equal_the_chapter_tables_and_results(build):
    kn, queries, qframe, sets = _synthetic_run()
    cs = C.consistency_table(kn, queries=qframe).drop(columns=["relation"])
    cs = cs.merge(queries.drop_duplicates(["model", "fact_id"])[["model", "fact_id", "relation", "subject", "obj"]],
                  on=["model", "fact_id"])
    shares = C.ki_share_table(cs, kind="cs2", static=0.3, otsu=True, n_boot=10)
    chapter = "01_kl_reexamination"
    data_export.write_table(chapter, "queries", queries)
    data_export.write_table(chapter, "kn_sets", kn)
    data_export.write_table(chapter, "consistency", cs)
    edits = pd.DataFrame([dict(model="m-small", fact_id="fact-1", task="erase", n_neurons=3, rel=1.0, gen=0.25,
                               loc=0.9, dppl=0.1)])
    data_export.write_table("05_cas_editing", "edits", edits.assign(selection="cas", avg=0.7))
    report.write_results(chapter, {"ki_shares": report.records(shares)},
                         {"parameters": {"cs_kind": "cs2", "static_threshold": 0.3, "profile": "smoke"}})
    data = explorer.explorer_data(build, [Path(f"book/{chapter}.py"), Path("book/05_cas_editing.py")])

    rows = {f["key"]: f for f in data["facts"]}
    assert len(rows) == len(cs)  # every (model, method, fact)
    results = json.loads((build / "results" / f"{chapter}.json").read_text())["numbers"]["ki_shares"]
    for r in results:
        if r["method"] == C.INTERSECTION_METHOD:
            continue
        col = "class_static" if r["threshold_kind"] == "static" else "class_otsu"
        theta = "theta_static" if r["threshold_kind"] == "static" else "theta_otsu"
        mine = [f for f in rows.values() if f["model"] == r["model"] and f["method"] == r["method"]]
        assert len(mine) == r["n_facts"]
        assert sum(f[col] == "K_I" for f in mine) == r["n_ki"], r
        assert all(f[theta] == pytest.approx(r["threshold"]) for f in mine)
    sample = random.Random(1).sample(sorted(rows), 5)
    for key in sample:
        f = rows[key]
        ref = cs[(cs.model == f["model"]) & (cs.method == f["method"]) & (cs.fact_id == f["fact_id"])].iloc[0]
        for col in ("cs1", "cs2", "pairwise", "mean_set_size", "n_queries"):
            assert f[col] == pytest.approx(ref[col]), (key, col)
        assert (f["relation"], f["subject"], f["obj"]) == (ref.relation, ref.subject, ref.obj)
        probs = queries[(queries.model == f["model"]) & (queries.fact_id == f["fact_id"])].prob
        assert (f["p_min"], f["p_max"]) == (pytest.approx(probs.min()), pytest.approx(probs.max()))
        detail = data["details"][key]
        pis = [q["pattern_index"] for q in detail["queries"]]
        assert pis == sorted(queries[(queries.model == f["model"]) & (queries.fact_id == f["fact_id"])].pattern_index)
        truth = [sets[(f["model"], f["method"], f["fact_id"], p)] for p in pis]
        assert [{(l, n) for l, n, _, _ in q["kns"]} for q in detail["queries"]] == truth
        for i, a in enumerate(truth):
            for j, b in enumerate(truth):
                expected = len(a & b) / len(a | b) if a | b else 0.0
                assert detail["jaccard"][i][j] == pytest.approx(expected)
    # the later chapter's edit shows up under the fact's rows (every method), with its numbers
    shown = [a for k, d in data["details"].items() if k.startswith("m-small|") and "|fact-1" in k
             for a in d["appearances"]]
    assert len(shown) == 2 and all(a["chapter"] == "05_cas_editing" and a["rows"][0][a["columns"].index("gen")] == 0.25
                                   for a in shown)
    assert not any(a for k, d in data["details"].items() if "|fact-2" in k for a in d["appearances"])
    # the JS data file parses back to the same data
    out = explorer.write_explorer(build / "site", data)
    text = out.read_text()
    assert text.startswith("window.KQ_EXPLORER_DATA = ") and "</script" not in text.lower()
    assert json.loads(text[len("window.KQ_EXPLORER_DATA = "):].rstrip().rstrip(";")) == json.loads(json.dumps(data))
    assert (build / "site" / "explorer.js").stat().st_size > 1000


def _toy_book(tmp_path: Path, steps: int) -> tuple[Path, Path]:
    root = tmp_path / "bookroot"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_toy\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    chapter = root / "book" / "01_toy.py"
    chapter.write_text(CHAPTER_SOURCE)
    nb = nbformat.v4.new_notebook()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter\n\nText."),
                nbformat.v4.new_code_cell('fig = plot()\npath = figures.save(fig, "01_toy_fig")\nplt.show()',
                                          outputs=[nbformat.v4.new_output("display_data", data={"image/png": png})]),
                nbformat.v4.new_code_cell("x = 1")]
    params = {"models": ["smollm2-135m"], "steps": steps, "relations": ["P36", "P103"], "profile": "smoke"}
    nb.metadata["papermill"] = {"parameters": params}
    executed = root / "_build" / "executed" / "book" / "01_toy.ipynb"
    executed.parent.mkdir(parents=True)
    nbformat.write(nb, executed)
    return root, chapter


def test_prepare_site_links_existing_files_and_reproduces_the_run(tmp_path, monkeypatch):
    root, chapter = _toy_book(tmp_path, steps=7)
    monkeypatch.setenv("KQ_BUILD_DIR", str(root / "_build"))
    data_export.write_table("01_toy", "points", pd.DataFrame({"x": [1, 2], "y": [0.5, 0.25]}), figure="01_toy_fig",
                            description="the points of the figure")
    data_export.write_table("01_toy", "other", pd.DataFrame({"model": ["a"]}))
    report.write_results("01_toy", {"n": 1}, {"models": ["smollm2-135m"], "fingerprints": {"smollm2-135m": "abc123"},
                                              "git_revision": "deadbeef", "wall_time_s": 1.5, "profile": "smoke",
                                              "device": {"cpu": "Test CPU", "cpu_count": 2}})
    src = root / "_build" / "executed"
    from kqlib.book.run.runner import notebook_chapters

    summary = explorer.prepare_site(root, src, notebook_chapters(root))
    again = explorer.prepare_site(root, src, notebook_chapters(root))  # idempotent: the cells are replaced, not added twice
    assert summary["chapters"]["01_toy"]["injected_cells"] == again["chapters"]["01_toy"]["injected_cells"] == 2
    nb = nbformat.read(src / "book" / "01_toy.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert [explorer.INJECTED_TAG in t for t in tags] == [False, True, False, True, False]
    top, fig_block = nb.cells[1].source, nb.cells[3].source
    assert "\n\n" not in top and "\n\n" not in fig_block  # one raw-HTML block each
    # every link of the injected cells resolves, relative to the page, to a file of the site
    page_dir = src / "book"
    hrefs = [h for cell in (top, fig_block) for h in re.findall(r'class="kq-data-link" href="([^"]+)"', cell)]
    assert {Path(h).name for h in hrefs} >= {"points.csv", "other.csv", "01_toy.json", "01_toy.ipynb", "01_toy.py"}
    site = src / explorer.SITE
    for h in hrefs:
        target = (page_dir / h).resolve()
        rel = target.relative_to(src.resolve())
        assert (site / rel).is_file(), h
    assert "points.csv" in fig_block and "other.csv" not in fig_block
    assert pd.read_csv(site / "data" / "01_toy" / "points.csv").y.tolist() == [0.5, 0.25]
    # the command reproduces the executed parameters; the run record is shown
    command = summary["chapters"]["01_toy"]["command"]
    assert command in top and command in fig_block and "abc123" in top and "deadbeef" in top and "Test CPU" in top
    words = shlex.split(command)
    assert words[:5] == ["kq", "run", "01", "--profile", "smoke"]
    overrides = parse_overrides([words[i + 1] for i, w in enumerate(words) if w == "-p"])
    assert overrides == {"steps": 7, "relations": ["P36", "P103"]} or overrides == {"steps": 7}
    ran = nb.metadata["papermill"]["parameters"]
    assert parameters_for(chapter, "smoke", overrides) == ran
    # the notebook offered for download is the one executed, without the injected cells
    clean = nbformat.read(site / "data" / "01_toy" / "01_toy.ipynb", as_version=4)
    assert len(clean.cells) == 3 and not any(explorer.INJECTED_TAG in c.metadata.get("tags", []) for c in clean.cells)
    assert (site / "explorer" / "explorer-data.js").exists() and (site / "explorer" / "explorer.css").exists()


def test_reproduce_command_full_roundtrip(tmp_path):
    root, chapter = _toy_book(tmp_path, steps=4)
    params = {"models": ["gpt2", "it's"], "steps": 4, "relations": [], "profile": "smoke"}
    for full in (False, True):
        words = shlex.split(explorer.reproduce_command(chapter, params, full=full))
        overrides = parse_overrides([words[i + 1] for i, w in enumerate(words) if w == "-p"])
        assert parameters_for(chapter, "smoke", overrides) == params
        if full:
            assert set(overrides) == {"models", "steps", "relations"}


@pytest.mark.skipif(not os.environ.get("KQ_BROWSER_BOOK"), reason="set KQ_BROWSER_BOOK=<book root> after `kq book`")
def test_built_explorer_has_every_fact_of_the_run():
    root = Path(os.environ["KQ_BROWSER_BOOK"]).resolve()
    text = (root / "_build" / "html" / "explorer" / "explorer-data.js").read_text()
    data = json.loads(text[len("window.KQ_EXPLORER_DATA = "):].rstrip().rstrip(";"))
    keys = {f["key"] for f in data["facts"]}
    expected = set()
    for chapter in ("01_kl_reexamination", "05_cas_editing"):
        cs = pd.read_csv(root / "_build" / "html" / "data" / chapter / "consistency.csv")
        expected |= {explorer.fact_key(*r) for r in cs[["model", "method", "fact_id"]].itertuples(index=False)}
    assert keys == expected
    results = json.loads((root / "_build" / "results" / "01_kl_reexamination.json").read_text())
    for r in results["numbers"]["ki_shares"]:
        if r["method"] == C.INTERSECTION_METHOD:
            continue
        col = "class_static" if r["threshold_kind"] == "static" else "class_otsu"
        mine = [f for f in data["facts"] if f["model"] == r["model"] and f["method"] == r["method"]
                and f["source"] == "01_kl_reexamination"]
        assert len(mine) == r["n_facts"] and sum(f[col] == "K_I" for f in mine) == r["n_ki"], r


def test_explorer_skips_tables_it_cannot_read_with_a_warning(build):
    kn, queries, qframe, sets = _synthetic_run(n_facts=2, methods=("ig",))
    cs = C.consistency_table(kn, queries=qframe)
    data_export.write_table("01_kl_reexamination", "queries", queries.drop(columns=["prompt"]))  # renamed away
    data_export.write_table("01_kl_reexamination", "kn_sets", kn)
    data_export.write_table("01_kl_reexamination", "consistency", cs)
    data_export.write_table("05_cas_editing", "queries", queries)
    data_export.write_table("05_cas_editing", "kn_sets", kn)
    data_export.write_table("05_cas_editing", "consistency", cs)
    data = explorer.explorer_data(build, [Path("book/01_kl_reexamination.py"), Path("book/05_cas_editing.py")])
    assert len(data["warnings"]) == 1 and "01_kl_reexamination" in data["warnings"][0] and "prompt" in data["warnings"][0]
    assert {f["source"] for f in data["facts"]} == {"05_cas_editing"} and len(data["facts"]) == len(cs)


@pytest.mark.skipif(not os.environ.get("KQ_BROWSER_BOOK"), reason="set KQ_BROWSER_BOOK=<book root> after `kq book`")
def test_built_explorer_numbers_equal_the_results_json():
    """A sample of facts of a built book: the explorer's numbers are those of the chapters' results JSON."""
    root = Path(os.environ["KQ_BROWSER_BOOK"]).resolve()
    text = (root / "_build" / "html" / "explorer" / "explorer-data.js").read_text()
    data = json.loads(text[len("window.KQ_EXPLORER_DATA = "):].rstrip().rstrip(";"))
    facts = {f["key"]: f for f in data["facts"]}
    r05 = json.loads((root / "_build" / "results" / "05_cas_editing.json").read_text())
    for c in random.Random(0).sample(r05["numbers"]["classes"], min(5, len(r05["numbers"]["classes"]))):
        f = facts[explorer.fact_key(c["model"], r05["run"]["parameters"]["method"], c["fact_id"])]
        assert f["n_queries"] == c["n_queries"] and f["relation"] == c["relation"]
        if f["source"] == "05_cas_editing":
            assert f["cs2"] == pytest.approx(c["cs2"])
            assert (f["class_static"], f["class_otsu"]) == (c["class"], c["class_otsu"])
    r01 = json.loads((root / "_build" / "results" / "01_kl_reexamination.json").read_text())
    edit_method = r01["run"]["parameters"]["edit_method"]
    for e in random.Random(0).sample(r01["numbers"]["edits"], min(5, len(r01["numbers"]["edits"]))):
        shown = [a for a in data["details"][explorer.fact_key(e["model"], edit_method, e["fact_id"])]["appearances"]
                 if a["chapter"] == "01_kl_reexamination" and a["table"] == "edits"]
        assert len(shown) == 1
        rows = [dict(zip(shown[0]["columns"], r)) for r in shown[0]["rows"]]
        mine = [r for r in rows if r["task"] == e["task"]]
        assert len(mine) == 1 and all(mine[0][m] == pytest.approx(e[m]) for m in ("rel", "gen", "loc", "dppl")
                                      if e[m] is not None)


@pytest.mark.skipif(not os.environ.get("KQ_BROWSER_BOOK"), reason="set KQ_BROWSER_BOOK=<book root> after `kq book`")
def test_built_downloads_rebuild_the_headline_numbers():
    """With pandas alone, the site's CSV downloads give back numbers the chapters report in their results JSON."""
    root = Path(os.environ["KQ_BROWSER_BOOK"]).resolve()
    site = root / "_build" / "html" / "data"

    def numbers(stem):
        return json.loads((site / stem / f"{stem}.json").read_text())["numbers"]

    def csv(stem, name):
        return pd.read_csv(site / stem / f"{name}.csv")

    n01, q01, cs01 = numbers("01_kl_reexamination"), csv("01_kl_reexamination", "queries"), csv("01_kl_reexamination", "consistency")
    assert n01["n_queries"] == len(q01) and n01["n_facts"] == len(q01.drop_duplicates(["model", "fact_id"]))
    assert n01["mean_cs"] == pytest.approx(cs01.cs2.mean()) and n01["n_edits"] == len(csv("01_kl_reexamination", "edits"))
    panels = [csv("01_kl_reexamination", f"fig1_{label}") for label in ("most_consistent", "least_consistent")]
    assert all(len(p) == 2 * (p.layer.max() + 1) * 12 and p.rel_score.between(0, 1).all() for p in panels)
    n02, cs02 = numbers("02_consistency_violins"), csv("02_consistency_violins", "consistency")
    assert n02["share_below_static"] == pytest.approx((cs02.cs2 < 0.3).mean())
    assert n02["median_cs"] == pytest.approx(cs02.cs2.median())
    assert numbers("03_query_kn_mapping")["n_interventions"] == len(csv("03_query_kn_mapping", "mapping"))
    n04, syn = numbers("04_dynamic_kn_selection"), csv("04_dynamic_kn_selection", "synapses")
    assert n04["n_queries"] == len(syn[syn.model == n04["model0"]].drop_duplicates(["fact_id", "pattern_index"]))
    assert numbers("05_cas_editing")["n_edits"] == len(csv("05_cas_editing", "edits"))
