"""The setup every chapter repeats, in one place: parameters, clock, models, localized data, claims, results.

A chapter notebook does::

    ch = Chapter("01_kl_reexamination", globals())   # reads the parameters its `parameters` cell declares
    lms = ch.models()                                 # loads ch.p.models
    data = ch.localize()                              # ParaRel facts + KN sets of every model (cached)
    ...
    ch.claim("ki_majority", model, estimate, low, high, n)   # one row of "Paper vs this run"
    ch.paper_vs_run()                                        # the table, generated from claims.toml
    ch.glue(numbers); ch.finish(extra results)               # glue into the prose, write the results JSON

``Chapter.finish`` writes ``_build/results/<chapter>.json`` with the glued numbers, the claim rows
(``numbers["claims"]``, read by the scorecard), the figures saved with :meth:`Chapter.save` and the run record
(exactly the declared parameters, the profile, models and timing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kqlib.book import report
from kqlib.book import verdicts as V
from kqlib.paper.consistency import class_label_series as class_labels  # noqa: F401 (chapters: K.class_labels)
from kqlib.errors import ParameterError
from kqlib.book.figures import violin_figure  # noqa: F401 (chapter 02: K.violin_figure)
from kqlib.paper.stats import fmt  # noqa: F401

PLAIN = (int, float, str, bool, list, tuple, dict, type(None))


def declared_names(name: str) -> list[str] | None:
    """Names of the chapter's ``parameters`` cell, from ``<name>.py`` beside the running kernel (the book's
    chapter folder) or under ``book/``; None when the source is not found."""
    from kqlib.book.profiles import declared_parameters

    for path in (Path(f"{name}.py"), Path("book") / f"{name}.py"):
        if path.exists():
            return list(declared_parameters(path))
    return None


class Chapter:
    """One chapter's run: its parameters (``ch.p.NAME``), models, data, claims, numbers and figures."""

    def __init__(self, name: str, namespace: Mapping[str, Any], names: Sequence[str] | None = None):
        import seaborn as sns

        self.name = name
        self.started = time.time()
        names = list(names) if names is not None else declared_names(name)
        if names is None:  # source not found: every plain global that is not private
            names = [k for k, v in namespace.items() if not k.startswith("_") and isinstance(v, PLAIN)
                     and k not in ("In", "Out", "exit", "quit")]
        missing = [n for n in names if n not in namespace]
        if missing:
            raise ParameterError(f"chapter {name}: parameters {missing} are declared but not defined")
        self.params = {n: namespace[n] for n in names}
        # where attributions run: values the book runner passes next to ``profile`` (not chapter parameters)
        self.executor = namespace.get("executor", "local")
        self.ray_address = namespace.get("ray_address")
        self.p = SimpleNamespace(**self.params, executor=self.executor, ray_address=self.ray_address)
        self.lms: list = []
        self.numbers: dict[str, Any] = {}
        self.claims: list[dict] = []
        self.figures: dict[str, str] = {}
        report.quiet()
        sns.set_theme(style="whitegrid", context="notebook")
        pd.set_option("display.max_colwidth", 80)

    # ------------------------------------------------------------------------------------- models, data

    def models(self) -> list:
        """Load ``p.models`` (once)."""
        import kqlib

        if not self.lms:
            self.lms = [kqlib.load(n) for n in self.p.models]
        return self.lms

    def model_table(self):
        return report.model_table(self.models())

    def sizes(self) -> dict[str, dict]:
        return {lm.name: report.model_size(lm) for lm in self.models()}

    def localize(self, methods: Sequence[str] | None = None, verbose: bool = True) -> "Localized":
        """ParaRel facts each model answers (``relations``, ``n_facts_per_relation``, ``seed``) and the KN sets
        of all their queries under ``methods`` (default ``p.methods``), with the chapter's ``steps``, ``site``
        and ``t_threshold`` (attributions come from the on-disk cache when an earlier chapter computed them)."""
        from kqlib.paper.localization import localize
        from kqlib.paper.pararel import build_dataset

        p = self.p
        methods = list(methods or p.methods)
        datasets, locs = {}, {}
        for lm in self.models():
            t0 = time.time()
            ds = build_dataset(lm, p.relations or None, p.n_facts_per_relation or None, seed=p.seed, progress=False)
            datasets[lm.name] = ds
            locs[lm.name] = localize(lm, ds.queries, methods, steps=p.steps, site=p.site, t=p.t_threshold,
                                     progress=False, executor=self.executor, address=self.ray_address)
            if verbose:
                print(f"{lm.name}: {len(ds)} facts, {len(ds.queries)} queries, {len(ds.relations())} relations; "
                      f"{len(methods)} method(s) localized in {time.time() - t0:.0f} s")
        return Localized(self.models(), datasets, locs, methods)

    # --------------------------------------------------------------------------------- claims, results

    def claim(self, claim_id: str, model: str = "all", estimate=None, low=None, high=None, n=None, **kw) -> dict:
        """Judge one claim of ``claims.toml`` (:func:`kqlib.book.verdicts.claim_row`) and keep the row."""
        row = V.claim_row(claim_id, model, estimate, low, high, n, **kw)
        if row["chapter"] != self.name:
            raise ParameterError(f"claim {claim_id!r} belongs to chapter {row['chapter']}, not {self.name}")
        self.claims.append(row)
        return row

    def paper_vs_run(self):
        """The "Paper vs this run" table of this chapter's claims (all of its claims in claims.toml must have
        been judged)."""
        mine = {c.id for c in V.claims(self.name)}
        done = {r["claim"] for r in self.claims}
        if mine - done:
            raise ParameterError(f"chapter {self.name} has not judged claim(s) {sorted(mine - done)}")
        return V.table(self.claims)

    def save(self, fig, name: str, key: str | None = None):
        from kqlib.book.figures import save

        path = save(fig, name)
        self.figures[key or name] = path.name
        return path

    def export(self, name: str, df, figure=None, description: str = "") -> None:
        """Write the tidy frame behind a figure/table to ``_build/data/<chapter>/<name>.csv`` (linked from the page
        with its schema; :func:`kqlib.book.data_export.write_table`)."""
        from kqlib.book.data_export import write_table

        write_table(self.name, name, df, figure=figure, description=description)

    def export_localization(self, data: "Localized", cs) -> None:
        """The three frames the fact explorer reads: every query, every knowledge neuron, every fact's CS."""
        self.export("queries", data.facts, description="every query of every fact, with the model's p(answer) and rank")
        self.export("kn_sets", data.neurons, description="knowledge neurons of every (model, method, query)")
        self.export("consistency", cs, description="one row per (model, method, fact): KN-set sizes and consistency scores")

    def glue(self, numbers: Mapping[str, Any]) -> None:
        """Keep ``numbers`` for the results JSON and glue the scalars into the prose."""
        self.numbers.update(numbers)
        report.glue_numbers({k: v for k, v in numbers.items() if v is None or isinstance(v, (int, float, str))})

    def glue_display(self, key: str, obj) -> None:
        """Glue a displayable object (a table, a figure) under ``key`` for pasting elsewhere in the book."""
        from myst_nb import glue

        glue(key, obj, display=False)

    def finish(self, **results) -> Path:
        """Write the results JSON: glued numbers, ``claims``, ``figures``, ``results`` and the run record."""
        out = dict(self.numbers)
        out.update(results)
        out["claims"] = self.claims
        out["figures"] = dict(self.figures)
        run = report.run_record(self.lms, parameters=self.params, started=self.started,
                                profile=self.params.get("profile"))
        run.update(results.pop("_run", {}) if "_run" in results else {})
        path = report.write_results(self.name, out, run)
        print(f"results written to {path.name}; wall time {run['wall_time_s']:.1f} s")
        return path


@dataclass
class Localized:
    """The facts and knowledge neurons of every model (what :meth:`Chapter.localize` returns)."""

    lms: list
    datasets: dict
    locs: dict
    methods: list

    @property
    def neurons(self) -> pd.DataFrame:
        return pd.concat([l.neurons for l in self.locs.values()], ignore_index=True)

    @property
    def queries(self) -> pd.DataFrame:
        return pd.concat([l.queries for l in self.locs.values()], ignore_index=True)

    @property
    def facts(self) -> pd.DataFrame:
        """One row per (model, query) of the dataset (fact_id, relation, subject, obj, ...)."""
        return pd.concat([d.to_frame().assign(model=m) for m, d in self.datasets.items()], ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """Queries, mean KN-set size and empty sets per model × method."""
        return (self.queries.groupby(["model", "method"])
                .agg(queries=("prompt", "size"), mean_KNs=("n_neurons", "mean"),
                     empty_sets=("n_neurons", lambda s: int((s == 0).sum())))
                .round(2))

    def consistency(self, kind: str = "cs2", locs: Mapping | None = None) -> pd.DataFrame:
        """One row per (model, method, fact) with its consistency scores (facts with < 2 queries dropped),
        with subject and object."""
        from kqlib.paper.consistency import consistency_table

        locs = locs if locs is not None else self.locs
        kn = pd.concat([l.neurons for l in locs.values()], ignore_index=True)
        q = pd.concat([l.queries for l in locs.values()], ignore_index=True)
        cs = consistency_table(kn, queries=q)
        facts = self.facts.drop_duplicates(["model", "fact_id"])[["model", "fact_id", "subject", "obj"]]
        cs = cs.merge(facts, on=["model", "fact_id"], how="left")
        return cs.dropna(subset=[kind]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------ helpers


def ci_cell(value, low, high, spec: str = ".2f") -> str:
    """"v [lo, hi]", "v" when the interval is degenerate, "–" when v is missing."""
    if value is None or not np.isfinite(value):
        return "–"
    if low is not None and np.isfinite(low) and high > low:
        return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"
    return f"{value:{spec}}"


# ----------------------------------------------------------------------- chapter 01: Figure 1, Table 2


def figure1(lm, cs: pd.DataFrame, data: Localized, method: str, p) -> tuple[Any, dict]:
    """The data-chosen Figure 1: the most and the least consistent fact of ``lm`` under ``method`` (ties by
    fact id), two queries each, their attribution heatmaps over the same top neurons per layer."""
    import matplotlib.pyplot as plt

    from kqlib.book.figures import query_heatmaps
    from kqlib.paper.localization import query_scores

    kind = p.cs_kind
    pool = cs[(cs.model == lm.name) & (cs.method == method)].sort_values([kind, "fact_id"])
    chosen = {"most consistent": pool.iloc[-1], "least consistent": pool.iloc[0]} if len(pool) else {}
    by_fact = {e.fact.fact_id: e for e in data.datasets[lm.name].facts}
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.6), sharey=True)
    info, image = {}, None
    for col, (label, row) in enumerate(chosen.items()):
        two = sorted(by_fact[row.fact_id].queries, key=lambda q: q.pattern_index)[:2]
        sc = query_scores(lm, two, method=method, steps=p.steps, site=p.site)
        image = query_heatmaps(axes[2 * col: 2 * col + 2], sc.numpy(),
                               [f"{label} ({kind} = {row[kind]:.2f})\n“{q.prompt} …”" for q in two])
        f = by_fact[row.fact_id].fact
        info[label] = dict(subject=f.subject, relation=f.relation, obj=f.obj, cs=float(row[kind]),
                           prompts=[q.prompt for q in two])
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="attribution / max")
    fig.suptitle(f"{lm.name}, {method}: two neighbor queries of the most and the least consistent fact", y=1.04)
    return fig, info


def one_query_edits(lms, data: Localized, cs: pd.DataFrame, p) -> pd.DataFrame:
    """Table 2's edits: each fact edited through the KNs of one query (``kqlib.paper.kl_editing``), with its CS."""
    from kqlib.paper import editing
    from kqlib.paper import kl_editing

    frames = []
    for lm in lms:
        mine = cs[(cs.model == lm.name) & (cs.method == p.edit_method)]
        t0 = time.time()
        df = kl_editing.run_single_query_edits(
            lm, data.datasets[lm.name], data.locs[lm.name].sets(p.edit_method, model=lm.name),
            query_filter=p.edit_queries, n_unrelated=p.n_unrelated, fact_ids=list(mine.fact_id),
            n_facts=p.n_edit_facts or None, seed=p.seed, ppl_texts=editing.DEFAULT_PPL_TEXTS[:p.n_ppl_texts])
        frames.append(df.merge(mine[["model", "fact_id", p.cs_kind]].rename(columns={p.cs_kind: "cs"}),
                               on=["model", "fact_id"], how="left"))
        print(f"{lm.name}: {df.fact_id.nunique()} of {len(mine)} facts edited ({len(df)} edits) in "
              f"{time.time() - t0:.0f} s")
    return pd.concat(frames, ignore_index=True)


def edit_classes(cs: pd.DataFrame, shares: pd.DataFrame, p, tk: str) -> dict[tuple[str, str], str]:
    """``{(model, fact_id): "K_C" | "K_I" | "K_none"}`` under ``p.edit_method`` at threshold kind ``tk``."""
    from kqlib.paper.consistency import thetas

    theta = thetas(shares)
    part = cs[cs.method == p.edit_method]
    labels = class_labels(part, {(m, p.edit_method): theta[(m, p.edit_method, tk)] for m in part.model.unique()},
                          p.cs_kind)
    return {(m, f): c for m, f, c in zip(part.model, part.fact_id, labels)}


def table2(edits: pd.DataFrame, cs: pd.DataFrame, shares: pd.DataFrame, p) -> pd.DataFrame:
    """Mean Rel/Gen/Loc/Avg/ΔPPL with bootstrap CIs over facts per (model, threshold kind, task, class)."""
    from kqlib.paper import kl_editing

    out = pd.concat([kl_editing.table2(edits, edit_classes(cs, shares, p, tk), n_boot=p.n_boot, seed=p.seed)
                     .assign(threshold_kind=tk) for tk in ("static", "otsu")], ignore_index=True)
    return out[out.group != "all"].rename(columns={"group": "cls"}).reset_index(drop=True)


def table2_view(t2: pd.DataFrame):
    view = t2[["model", "threshold_kind", "task", "cls", "facts"]].copy()
    for m, label, spec in (("rel", "Rel", ".2f"), ("gen", "Gen", ".2f"), ("loc", "Loc", ".2f"),
                           ("avg", "Avg", ".2f"), ("dppl", "ΔPPL", "+.3g")):
        view[label] = [ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"], spec) for _, r in t2.iterrows()]
    return view.rename(columns={"cls": "class"}).style.hide(axis="index")


def table2_figure(edits: pd.DataFrame, classes: Mapping, p):
    """Rel/Gen/Loc bars per class for erase and update (static θ)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = (edits.assign(cls=[classes.get((m, f)) for m, f in zip(edits.model, edits.fact_id)])
            .melt(id_vars=["model", "fact_id", "task", "cls"], value_vars=["rel", "gen", "loc"], var_name="metric"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, task in zip(axes, ("erase", "update")):
        part = long[long.task == task].dropna(subset=["value"])
        if len(part):
            sns.barplot(data=part, x="metric", y="value", hue="cls", hue_order=["K_C", "K_I"],
                        order=["rel", "gen", "loc"], ax=ax, errorbar=("ci", 95), seed=p.seed, legend=ax is axes[0])
        ax.set_title(f"{task} ({part.fact_id.nunique()} facts)")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("")
        ax.set_ylabel("mean over facts (95 % CI)")
    fig.suptitle(f"One-query edits by class (static θ = {p.static_threshold:g}, {p.edit_method} KNs)")
    fig.tight_layout()
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "upper left", bbox_to_anchor=(2.05, 1.0), title="class", frameon=False)
    return fig


def gen_gap(edits: pd.DataFrame, classes: Mapping, model: str, task: str = "erase", p=None) -> dict:
    """Gen(K_C) − Gen(K_I) over the edited facts of one model and task, with a bootstrap CI over the facts of
    each class; n = facts of the smaller class."""
    from kqlib.paper.stats import share_difference_ci

    part = edits[(edits.model == model) & (edits.task == task)]
    cls = np.array([classes.get((model, f)) for f in part.fact_id], dtype=object)
    kc = part.gen[cls == "K_C"].dropna().to_numpy(float)
    ki = part.gen[cls == "K_I"].dropna().to_numpy(float)
    if not len(kc) or not len(ki):
        return dict(why_not=f"a class has no edited fact ({len(kc)} K_C, {len(ki)} K_I)")
    d, lo, hi = share_difference_ci(kc, ki, n_boot=getattr(p, "n_boot", 2000), seed=getattr(p, "seed", 0))
    return dict(estimate=d, low=lo, high=hi, n=min(len(kc), len(ki)), unit="facts (smaller class)",
                detail=f"{len(kc)} K_C / {len(ki)} K_I edited facts")


def kl_numbers(ch: Chapter, data: Localized, cs: pd.DataFrame, shares: pd.DataFrame, edits: pd.DataFrame,
               classes: Mapping) -> dict[str, Any]:
    """Chapter 01's headline numbers (glued into its prose) and its claims (kept on ``ch``)."""
    from kqlib.paper.consistency import INTERSECTION_METHOD, welch_claim

    p, lms = ch.p, ch.models()
    facts = data.facts
    inter = shares[shares.method == INTERSECTION_METHOD].set_index(["model", "threshold_kind"])
    per_method = shares[shares.method != INTERSECTION_METHOD]
    static_pm = per_method[per_method.threshold_kind == "static"]
    ps = per_method["welch_p"].to_numpy(float)
    n_p = int(np.isfinite(ps).sum())
    gaps = {task: [gen_gap(edits, classes, lm.name, task, p) for lm in lms] for task in ("erase", "update")}
    mean_gap = {t: (float(np.mean([g["estimate"] for g in v])) if all("estimate" in g for g in v) else None)
                for t, v in gaps.items()}
    erase = edits[edits.task == "erase"]
    cls = [classes.get((m, f)) for m, f in zip(erase.model, erase.fact_id)]
    lm0 = lms[0].name
    nums = {
        "n_models": len(lms), "n_facts": int(facts.drop_duplicates(["model", "fact_id"]).shape[0]),
        "n_queries": int(facts.shape[0]), "n_relations": int(facts.relation.nunique()),
        "queries_per_fact": float(facts.groupby(["model", "fact_id"]).size().mean()), "model0": lm0,
        "ki_static_all_model0": report.finite_or_none(inter.loc[(lm0, "static"), "share_ki"]),
        "ki_otsu_all_model0": report.finite_or_none(inter.loc[(lm0, "otsu"), "share_ki"]),
        "ki_static_min_method": float(static_pm.share_ki.min()),
        "ki_static_max_method": float(static_pm.share_ki.max()),
        "share_below_static": float((cs[p.cs_kind] < p.static_threshold).mean()),
        "mean_cs": float(cs[p.cs_kind].mean()), "n_none_facts": int(shares.n_none.max()),
        "n_welch_p_defined": n_p, "n_welch_tests": int(len(ps)),
        "welch_p_max": float(np.nanmax(ps)) if n_p else None,
        "n_edits": int(len(edits)), "n_edited_facts": int(edits.drop_duplicates(["model", "fact_id"]).shape[0]),
        "gen_gap_erase": mean_gap["erase"], "gen_gap_update": mean_gap["update"],
        "edited_kc_facts": int(sum(c == "K_C" for c in cls)), "edited_ki_facts": int(sum(c == "K_I" for c in cls)),
    }
    nums["gen_gap_erase_text"] = fmt(nums["gen_gap_erase"], "+.2f")
    nums["gen_gap_update_text"] = fmt(nums["gen_gap_update"], "+.2f")
    nums["welch_p_max_text"] = fmt(nums["welch_p_max"], ".1e", "undefined (a group has fewer than 2 facts)")
    for k in ("ki_static_all_model0", "ki_otsu_all_model0", "ki_static_min_method", "ki_static_max_method",
              "share_below_static"):
        nums[k + "_text"] = fmt(nums[k], ".0%")
    for lm in lms:
        r = inter.loc[(lm.name, "static")]
        ch.claim("ki_majority", lm.name, r.share_ki, r.ci_low, r.ci_high, int(r.n_facts), interval="wilson",
                 detail=f"per method {static_pm[static_pm.model == lm.name].share_ki.min():.0%}–"
                        f"{static_pm[static_pm.model == lm.name].share_ki.max():.0%}")
        ch.claim("welch_separation", lm.name, **welch_claim(shares, lm.name))
        ch.claim("edit_gen_gap", lm.name, **gen_gap(edits, classes, lm.name, "erase", p))
    return nums


# -------------------------------------------------------------- chapter 02: sizes, thresholds, sites


def size_table(shares: pd.DataFrame, sizes: Mapping[str, Mapping]) -> pd.DataFrame:
    """K_I shares per model with both size measures, ordered by MLP neurons."""
    from kqlib.book.report import order_by_size

    order = {m: i for i, m in enumerate(order_by_size(sizes))}
    out = shares.assign(**{"MLP neurons": shares.model.map(lambda m: sizes[m]["mlp_neurons"]),
                           "params (M)": shares.model.map(lambda m: round(sizes[m]["parameters"] / 1e6, 1)),
                           "non-emb. params (M)": shares.model.map(
                               lambda m: round(sizes[m]["non_embedding_parameters"] / 1e6, 1)),
                           "_o": shares.model.map(order)})
    out = out.sort_values(["_o", "threshold_kind", "method"])
    return out[["model", "MLP neurons", "params (M)", "non-emb. params (M)", "threshold_kind", "method", "n_facts",
                "share_ki", "ci_low", "ci_high"]]


def threshold_grid(data: Localized, p) -> pd.DataFrame:
    """∩ and per-method K_I shares for every (t, θ) of ``p.t_grid`` × ``p.theta_grid`` (KN sets recomputed
    from the cached scores for every t)."""
    from kqlib.paper.consistency import ki_share_table
    from kqlib.paper.localization import localize

    rows = []
    for t in p.t_grid:
        loc_t = {lm.name: localize(lm, data.datasets[lm.name].queries, data.methods, steps=p.steps, site=p.site,
                                   t=float(t), progress=False) for lm in data.lms}
        s_t = ki_share_table(data.consistency(p.cs_kind, loc_t), kind=p.cs_kind, static=list(p.theta_grid),
                             otsu=False, n_boot=1, seed=p.seed)
        for r in s_t.itertuples():
            rows.append(dict(model=r.model, method=r.method, t=float(t), theta=float(r.threshold),
                             share_ki=r.share_ki, n_facts=r.n_facts))
    return pd.DataFrame(rows)


def grid_figure(grid: pd.DataFrame, models: Sequence[str], methods: Sequence[str]):
    import matplotlib.pyplot as plt

    from kqlib.paper.consistency import INTERSECTION_METHOD
    from kqlib.book.figures import heat_table

    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        tab = grid[(grid.model == m) & (grid.method == INTERSECTION_METHOD)].pivot(index="t", columns="theta",
                                                                                    values="share_ki")
        heat_table(ax, tab, xlabel="consistency threshold θ", ylabel="per-query KN threshold t",
                   title=f"{m}: K_I share (∩ of {', '.join(methods)})")
    fig.tight_layout()
    return fig


def site_comparison(data: Localized, p) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The same facts attributed at ``p.site`` and ``p.compare_site`` (methods ``p.site_methods``, facts
    ``p.site_relations`` / ``p.n_site_facts``): per-fact CS per site, per-query KN-set Jaccard, and a
    summary per (model, method, site)."""
    import random

    from kqlib.paper.consistency import consistency_table, jaccard, share_inconsistent
    from kqlib.paper.localization import localize

    kind = p.cs_kind
    site_rows, overlap_rows = [], []
    for lm in data.lms:
        entries = [e for e in data.datasets[lm.name].facts if not p.site_relations or e.fact.relation in p.site_relations]
        entries = sorted(entries, key=lambda e: (e.fact.relation, e.fact.fact_id))
        if p.n_site_facts and len(entries) > p.n_site_facts:
            entries = random.Random(p.seed).sample(entries, p.n_site_facts)
        qs = [q for e in entries for q in e.queries]
        if not qs:
            continue
        by_site = {}
        for s in (p.site, p.compare_site):
            by_site[s] = localize(lm, qs, p.site_methods, steps=p.steps, site=s, t=p.t_threshold, progress=False)
            c = consistency_table(by_site[s].neurons, queries=by_site[s].queries).dropna(subset=[kind])
            site_rows.append(c.assign(site=s))
        for m in p.site_methods:
            a, b = by_site[p.site].sets(m, model=lm.name), by_site[p.compare_site].sets(m, model=lm.name)
            for key in a:
                overlap_rows.append(dict(model=lm.name, method=m, fact_id=key[0], pattern_index=key[1],
                                         jaccard=jaccard(a[key], b[key]), n_post=len(a[key]), n_pre=len(b[key])))
    site_cs = pd.concat(site_rows, ignore_index=True) if site_rows else pd.DataFrame(
        columns=["model", "method", "fact_id", kind, "site", "mean_set_size"])
    overlap = pd.DataFrame(overlap_rows, columns=["model", "method", "fact_id", "pattern_index", "jaccard", "n_post",
                                                  "n_pre"])
    summary = (site_cs.groupby(["model", "method", "site"])
               .agg(facts=("fact_id", "nunique"), mean_cs=(kind, "mean"),
                    ki_static=(kind, lambda v: share_inconsistent(v, p.static_threshold)),
                    mean_kns=("mean_set_size", "mean"))
               .reset_index())
    return site_cs, overlap, summary


def site_figure(site_cs: pd.DataFrame, p):
    import matplotlib.pyplot as plt
    import seaborn as sns

    paired = site_cs.pivot_table(index=["model", "method", "fact_id"], columns="site", values=p.cs_kind).reset_index()
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    sns.scatterplot(data=paired, x=p.site, y=p.compare_site, hue="method", ax=ax, s=40)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.axhline(p.static_threshold, color="#c0392b", linestyle="--", linewidth=1)
    ax.axvline(p.static_threshold, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{p.cs_kind.upper()} at site {p.site!r}")
    ax.set_ylabel(f"{p.cs_kind.upper()} at site {p.compare_site!r}")
    ax.set_title(f"same facts, two neuron sites (n = {len(paired)})")
    fig.tight_layout()
    return fig


def model_order_claim(cs: pd.DataFrame, sizes: Mapping[str, Mapping], p) -> dict:
    """Claim 2: ∩ static K_I share of the model with the fewest MLP neurons minus that of the model with the
    most, bootstrap over each model's facts; "not measurable here" with one model. The detail names both
    orderings (MLP neurons and parameters)."""
    from kqlib.book.report import order_by_size
    from kqlib.paper.stats import share_difference_ci

    by_mlp, by_params = order_by_size(sizes, "mlp_neurons"), order_by_size(sizes, "parameters")
    orders = (f"smallest by MLP neurons: {by_mlp[0]} ({sizes[by_mlp[0]]['mlp_neurons']:,}); "
              f"by parameters: {by_params[0]} ({sizes[by_params[0]]['parameters'] / 1e6:.0f} M)")
    if len(sizes) < 2:
        return dict(why_not="needs two models (profile cpu or paper)", detail=orders)
    from kqlib.paper.consistency import intersection_flags

    small, large = by_mlp[0], by_mlp[-1]
    a = intersection_flags(cs, p.cs_kind, p.static_threshold, small)
    b = intersection_flags(cs, p.cs_kind, p.static_threshold, large)
    if not a.size or not b.size:
        return dict(why_not="a model has no classified fact", detail=orders)
    d, lo, hi = share_difference_ci(a, b, n_boot=p.n_boot, seed=p.seed)
    return dict(estimate=d, low=lo, high=hi, n=int(min(a.size, b.size)), unit="facts (smaller sample)",
                detail=f"{small} {a.mean():.0%} (n={a.size}) − {large} {b.mean():.0%} (n={b.size}); {orders}")


def violin_numbers(ch: Chapter, cs: pd.DataFrame, shares: pd.DataFrame, grid: pd.DataFrame, site_cs: pd.DataFrame,
                   overlap: pd.DataFrame, site_summary: pd.DataFrame) -> dict[str, Any]:
    """Chapter 02's headline numbers and claims (kept on ``ch``)."""
    from kqlib.paper.consistency import INTERSECTION_METHOD, below_threshold_claim
    from kqlib.book.report import finite_or_none, order_by_size

    p, sizes = ch.p, ch.sizes()
    order = order_by_size(sizes)
    small, large = order[0], order[-1]
    inter = shares[shares.method == INTERSECTION_METHOD].set_index(["model", "threshold_kind"])
    g_inter = grid[grid.method == INTERSECTION_METHOD]
    post_ki = site_summary[site_summary.site == p.site]["ki_static"]
    pre_ki = site_summary[site_summary.site == p.compare_site]["ki_static"]
    head = inter.loc[(small, "static")]
    nums = {
        "n_models": len(sizes), "n_facts": int(cs.drop_duplicates(["model", "fact_id"]).shape[0]),
        "n_relations": int(cs.relation.nunique()),
        "share_below_static": float((cs[p.cs_kind] < p.static_threshold).mean()),
        "median_cs": float(cs[p.cs_kind].median()), "smallest_model": small, "largest_model": large,
        "ki_static_all_smallest": finite_or_none(inter.loc[(small, "static"), "share_ki"]),
        "ki_static_all_largest": finite_or_none(inter.loc[(large, "static"), "share_ki"]),
        "grid_min": float(g_inter.share_ki.min()), "grid_max": float(g_inter.share_ki.max()),
        "headline_ci_width": finite_or_none(head.ci_high - head.ci_low),
        "site_facts": int(site_cs[site_cs.site == p.site].drop_duplicates(["model", "fact_id"]).shape[0]),
        "site_mean_jaccard": finite_or_none(overlap.jaccard.mean()) if len(overlap) else None,
        "site_ki_post": finite_or_none(post_ki.mean()) if len(post_ki) else None,
        "site_ki_pre": finite_or_none(pre_ki.mean()) if len(pre_ki) else None,
    }
    for key in ("ki_static_all_smallest", "ki_static_all_largest", "site_ki_post", "site_ki_pre",
                "site_mean_jaccard"):
        nums[key + "_text"] = fmt(nums[key], ".2f" if key == "site_mean_jaccard" else ".0%")
    nums["share_below_static_text"] = f"{nums['share_below_static']:.0%}"
    nums["grid_range_text"] = f"{nums['grid_min']:.0%}–{nums['grid_max']:.0%}"
    spread, width = nums["grid_max"] - nums["grid_min"], nums["headline_ci_width"]
    nums["grid_spread_text"] = f"{spread:.0%}"
    nums["headline_ci_width_text"] = fmt(width, ".0%")
    nums["grid_vs_ci_text"] = ("cannot be compared (no interval)" if width is None else
                               "move the headline number more than" if spread > width else
                               "move the headline number less than")
    for m in sizes:
        ch.claim("cs_below_threshold", m, **below_threshold_claim(cs, p.cs_kind, p.static_threshold, m, p.n_boot,
                                                                  p.seed))
    ch.claim("model_order", "all", **model_order_claim(cs, sizes, p))
    ch.claim("threshold_sensitivity", "all", spread, n=nums["n_facts"],
             detail=f"∩ K_I share over the t × θ grid: {nums['grid_range_text']}; 95 % CI width of "
                    f"{small}'s static ∩ share: {nums['headline_ci_width_text']}")
    ch.claim("neuron_site", "all", None if nums["site_ki_pre"] is None or nums["site_ki_post"] is None else
             nums["site_ki_pre"] - nums["site_ki_post"], n=nums["site_facts"],
             detail=f"K_I (static, {', '.join(p.site_methods)}): post {nums['site_ki_post_text']}, pre "
                    f"{nums['site_ki_pre_text']}; KN-set Jaccard {nums['site_mean_jaccard_text']}")
    return nums


# ------------------------------------------------------------------------ chapter 05: CAS editing

SEL_ORDER = ["N_i", "N_g", "cas"]
GROUPS = ["all", "K_C", "K_I"]


def cas_classes(cs: pd.DataFrame, p) -> tuple[pd.DataFrame, dict, dict]:
    """``cs`` with ``class`` (static θ) and ``class_otsu`` (Otsu θ per model), K_none for facts without any
    KN; returns (cs, {(model, fact): class}, {model: Otsu θ})."""
    from kqlib.paper.consistency import class_labels as labels, otsu_threshold

    cs = cs.copy()
    usable = cs[cs.union_size > 0]
    otsu = {m: otsu_threshold(g[p.cs_kind]) for m, g in usable.groupby("model")}
    cs["class"] = labels(cs[p.cs_kind], p.static_threshold, cs.union_size)
    cs["class_otsu"] = [labels([v], otsu.get(m, np.nan), [u])[0]
                        for m, v, u in zip(cs.model, cs[p.cs_kind], cs.union_size)]
    return cs, {(r.model, r.fact_id): r["class"] for _, r in cs.iterrows()}, otsu


def _edit_kw(p) -> dict:
    from kqlib.paper import editing

    return dict(method=p.method, steps=p.steps, site=p.site, t=p.t_threshold, cas_method=p.cas_method,
                cas_threshold=p.cas_threshold, n_heldout=p.n_heldout, split=p.split, query_filter=p.query_filter,
                n_unrelated=p.n_unrelated, lambda1=p.lambda1, lambda2=p.lambda2, seed=p.seed,
                n_facts=p.n_edit_facts or None, ppl_texts=editing.DEFAULT_PPL_TEXTS[:p.n_ppl_texts])


class CasEdits:
    """Every fact edited with every selection (``kqlib.paper.cas_editing.run_cas_editing``); the evaluation caches
    are kept so that the β ablation re-evaluates only new neuron sets."""

    def __init__(self, lms, data: Localized, classes: Mapping, p):
        from kqlib.paper import cas_editing as CE

        self.lms, self.data, self.p = lms, data, p
        self.eval_caches = {lm.name: {} for lm in lms}
        self.memos = {lm.name: {} for lm in lms}
        t0 = time.time()
        self.edits = pd.concat([CE.run_cas_editing(lm, data.datasets[lm.name], beta1=p.beta1, beta2=p.beta2,
                                                   eval_cache=self.eval_caches[lm.name],
                                                   edit_memo=self.memos[lm.name], **_edit_kw(p)) for lm in lms],
                               ignore_index=True)
        self.edits["class"] = [classes.get((m, f), "unclassified")
                               for m, f in zip(self.edits.model, self.edits.fact_id)]
        self.seconds = time.time() - t0
        e = self.edits
        print(f"{len(e)} edits of {e.fact_id.nunique()} facts ({int((~e.reused).sum())} evaluated, the rest "
              f"repeat an identical neuron set) in {self.seconds:.0f} s; usable facts per model: "
              f"{e.groupby('model').fact_id.nunique().to_dict()}")

    def sizes(self) -> pd.DataFrame:
        return (self.edits[self.edits.task == "erase"].groupby(["model", "selection"]).n_neurons
                .agg(["mean", "median", "min", "max"]).reindex(SEL_ORDER, level="selection").round(1))

    def ablation(self) -> pd.DataFrame:
        """CAS with β1 fixed and β2 over ``p.beta2_grid``: mean metrics per (model, task, β2), Avg CI over facts."""
        from kqlib.paper import cas_editing as CE
        from kqlib.paper.consistency import bootstrap_ci

        p = self.p
        abl = [self.edits[self.edits.selection == "cas"]]
        for b2 in p.beta2_grid:
            if float(b2) == float(p.beta2):
                continue
            abl.append(pd.concat([CE.run_cas_editing(lm, self.data.datasets[lm.name], selections=("cas",),
                                                     beta1=p.beta1, beta2=float(b2),
                                                     eval_cache=self.eval_caches[lm.name],
                                                     edit_memo=self.memos[lm.name], **_edit_kw(p))
                                  for lm in self.lms], ignore_index=True))
        rows = pd.concat(abl, ignore_index=True)
        rows = rows[rows.beta2.isin([float(b) for b in p.beta2_grid])]
        out = []
        for (model, task, b2), g in rows.groupby(["model", "task", "beta2"]):
            row = dict(model=model, task=task, beta2=b2, facts=len(g), neurons=g.n_neurons.mean())
            for m in ("rel", "gen", "loc", "avg", "dppl"):
                row[m] = g[m].mean()
            row["avg_low"], row["avg_high"] = bootstrap_ci(g["avg"], n_boot=p.n_boot, seed=p.seed)
            out.append(row)
        return pd.DataFrame(out)


    def lambda2_sweep(self) -> pd.DataFrame:
        """Updates with λ2 over ``p.lambda2_grid`` (λ1 fixed), every selection: per (model, selection, λ2) the
        facts, mean Rel, Gen, Loc, Avg, the median ΔPPL and the share of updates whose perplexity overflowed."""
        from kqlib.paper import cas_editing as CE

        p = self.p
        frames = [self.edits[self.edits.task == "update"].assign(lambda2=float(p.lambda2))]
        for l2 in p.lambda2_grid:
            if float(l2) == float(p.lambda2):
                continue
            kw = dict(_edit_kw(p), lambda2=float(l2))
            frames.append(pd.concat([CE.run_cas_editing(lm, self.data.datasets[lm.name], tasks=("update",),
                                                        beta1=p.beta1, beta2=p.beta2,
                                                        eval_cache=self.eval_caches[lm.name],
                                                        edit_memo=self.memos[lm.name], **kw)
                                     for lm in self.lms], ignore_index=True).assign(lambda2=float(l2)))
        rows = pd.concat(frames, ignore_index=True)
        rows = rows[rows.lambda2.isin([float(x) for x in p.lambda2_grid])]
        return (rows.groupby(["model", "selection", "lambda2"])
                .agg(facts=("fact_id", "nunique"), rel=("rel", "mean"), gen=("gen", "mean"), loc=("loc", "mean"),
                     avg=("avg", "mean"), dppl_median=("dppl", "median"),
                     ppl_overflow=("dppl", lambda s: float(s.isna().mean())))
                .reset_index())


def table3(edits: pd.DataFrame, classes: Mapping, p) -> pd.DataFrame:
    from kqlib.paper import cas_editing as CE

    t3 = CE.table3(edits, classes=classes, n_boot=p.n_boot, seed=p.seed)
    t3["selection"] = pd.Categorical(t3.selection, SEL_ORDER, ordered=True)
    t3["group"] = pd.Categorical(t3.group, GROUPS, ordered=True)
    return t3.sort_values(["model", "task", "group", "selection"]).reset_index(drop=True)


def table3_view(t3: pd.DataFrame):
    view = pd.DataFrame({
        "model": t3.model, "task": t3.task, "group": t3.group.astype(str), "selection": t3.selection.astype(str),
        "facts": t3.facts, "neurons": t3.n_neurons.round(1),
        **{lab: [ci_cell(r[m], r[m + "_low"], r[m + "_high"], "+.3g" if m == "dppl" else ".2f")
                 if np.isfinite(r[m]) else "–" for _, r in t3.iterrows()]
           for lab, m in (("Rel", "rel"), ("Gen", "gen"), ("Loc", "loc"), ("Avg", "avg"), ("ΔPPL", "dppl"))}})
    return view.style.hide(axis="index")


def _ci_points(ax, frame, x, hue, y, order, hue_order, palette=None, width=0.6):
    import seaborn as sns

    palette = palette or sns.color_palette("deep", len(hue_order))
    step = width / max(len(hue_order), 1)
    for j, h in enumerate(hue_order):
        part = frame[frame[hue] == h].set_index(x).reindex(order)
        xs = np.arange(len(order)) - width / 2 + step * (j + 0.5)
        ok = np.isfinite(part[y].to_numpy(float))
        lo = np.clip((part[y] - part[f"{y}_low"]).to_numpy(float), 0, None)
        hi = np.clip((part[f"{y}_high"] - part[y]).to_numpy(float), 0, None)
        ax.errorbar(xs[ok], part[y].to_numpy(float)[ok], yerr=[lo[ok], hi[ok]], fmt="o", capsize=3,
                    color=palette[j], label=str(h))
    ax.set_xticks(range(len(order)), order)


def avg_figure(t3: pd.DataFrame, models):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.8 * len(models)), squeeze=False, sharey=True)
    for i, m in enumerate(models):
        for ax, task in zip(axes[i], ("erase", "update")):
            part = t3[(t3.model == m) & (t3.task == task)].astype({"selection": str, "group": str})
            _ci_points(ax, part, "selection", "group", "avg", SEL_ORDER, GROUPS)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{m}: {task}")
            ax.set_ylabel("Avg = (Rel + Gen + Loc) / 3")
            ax.legend(title="facts", fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def metrics_figure(t3: pd.DataFrame, models):
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = []
    for m in ("rel", "gen", "loc"):
        sub = t3[t3.group == "all"][["model", "task", "selection", m, f"{m}_low", f"{m}_high"]].copy()
        sub.columns = ["model", "task", "selection", "value", "value_low", "value_high"]
        long.append(sub.assign(metric={"rel": "Rel", "gen": "Gen", "loc": "Loc"}[m]))
    long = pd.concat(long, ignore_index=True).astype({"selection": str})
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False, sharey=True)
    for i, m in enumerate(models):
        for ax, task in zip(axes[i], ("erase", "update")):
            part = long[(long.model == m) & (long.task == task)]
            _ci_points(ax, part, "metric", "selection", "value", ["Rel", "Gen", "Loc"], SEL_ORDER,
                       palette=sns.color_palette("Set2", 3))
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{m}: {task}, all facts")
            ax.legend(title="selection", fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def pooled_per_fact(edits: pd.DataFrame) -> pd.DataFrame:
    """Erase and update averaged PER FACT and selection (model "all", task "both", fact_id "model/fact"), so a
    fact counts once in a pooled interval (pooling the two tasks' rows as separate units counts it twice)."""
    metrics = ["rel", "gen", "loc", "avg", "dppl"]
    g = (edits.groupby(["model", "fact_id", "selection"], sort=False)[metrics].mean().reset_index())
    return g.assign(fact_id=g.model + "/" + g.fact_id, model="all", task="both")


def cas_gains(edits: pd.DataFrame, classes: Mapping, p) -> pd.DataFrame:
    """CAS − baseline per (model, task) and pooled ("all", "both": tasks averaged per fact), paired by fact,
    bootstrap CI over facts, for Avg, Gen, Loc and Rel, overall and per class."""
    from kqlib.paper import cas_editing as CE

    pooled = pooled_per_fact(edits)
    pooled_classes = {("all", f"{m}/{f}"): c for (m, f), c in classes.items()}
    frames = []
    for metric in ("avg", "gen", "loc", "rel"):
        g1 = CE.paired_gains(edits, metric=metric, classes=classes, n_boot=p.n_boot, seed=p.seed)
        g2 = CE.paired_gains(pooled, metric=metric, classes=pooled_classes, n_boot=p.n_boot, seed=p.seed)
        frames.append(pd.concat([g1, g2], ignore_index=True).assign(metric=metric))
    return pd.concat(frames, ignore_index=True)


def gains_view(gains: pd.DataFrame):
    v = gains[gains.metric == "avg"].copy()
    v["CAS − baseline"] = ["–" if not np.isfinite(r.gain) else f"{r.gain:+.3f} [{r.gain_low:+.3f}, {r.gain_high:+.3f}]"
                           for r in v.itertuples()]
    return v[["model", "task", "baseline", "group", "facts", "cas", "baseline_value", "CAS − baseline"]].style.format(
        {"cas": "{:.3f}", "baseline_value": "{:.3f}"}, na_rep="–").hide(axis="index")


def beta_figure(abl: pd.DataFrame, beta1: float):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=False)
    ax = axes[0]
    for (model, task), g in abl.groupby(["model", "task"]):
        g = g.sort_values("beta2")
        ax.plot(g.beta2, g.avg, marker="o", label=f"{model}, {task}")
        ax.fill_between(g.beta2, g.avg_low, g.avg_high, alpha=0.15)
    ax.set_xlabel("β2 (β1 = %g)" % beta1)
    ax.set_ylabel("Avg")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("CAS: Avg vs. β2")
    ax.legend(fontsize=8)
    ax = axes[1]
    for (model, task), g in abl[abl.task == "erase"].groupby(["model", "task"]):
        g = g.sort_values("beta2")
        ax.plot(g.beta2, g.neurons, marker="o", label=model)
    ax.set_xlabel("β2")
    ax.set_ylabel("neurons selected (mean)")
    ax.set_title("CAS: selection size vs. β2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cas_numbers(ch: Chapter, edits: pd.DataFrame, t3: pd.DataFrame, gains: pd.DataFrame, abl: pd.DataFrame,
                classes: Mapping) -> dict[str, Any]:
    """Chapter 05's headline numbers and its claims (kept on ``ch``)."""
    from kqlib.book.report import finite_or_none
    from kqlib.paper.stats import share_difference_ci

    p, lms = ch.p, ch.models()
    lm0 = lms[0].name

    def gain(baseline, metric="avg", group="all", model="all", task="both"):
        r = gains[(gains.metric == metric) & (gains.baseline == baseline) & (gains.group == group)
                  & (gains.model == model) & (gains.task == task)]
        if not len(r) or not np.isfinite(r.gain.iloc[0]):
            return None, None, None, 0
        r = r.iloc[0]
        return float(r.gain), finite_or_none(r.gain_low), finite_or_none(r.gain_high), int(r.facts)

    def t3_value(model, task, sel, metric="avg", group="all"):
        r = t3[(t3.model == model) & (t3.task == task) & (t3.selection == sel) & (t3.group == group)]
        return finite_or_none(r[metric].iloc[0]) if len(r) else None

    nums: dict[str, Any] = {
        "n_models": len(lms), "model0": lm0,
        "n_facts_edited": int(edits.groupby("model").fact_id.nunique().sum()) if len(edits) else 0,
        "n_edits": int(len(edits)),
        "n_kc_edited": int(edits[edits["class"] == "K_C"].groupby("model").fact_id.nunique().sum()),
        "n_ki_edited": int(edits[edits["class"] == "K_I"].groupby("model").fact_id.nunique().sum()),
        "edited_queries_per_fact": finite_or_none(edits.drop_duplicates(["model", "fact_id"]).n_edited_queries.mean()),
    }
    for sel in SEL_ORDER:
        nums[f"neurons_{sel}"] = finite_or_none(edits[edits.selection == sel].n_neurons.mean())
    for task in ("erase", "update"):
        for sel in SEL_ORDER:
            nums[f"avg_{task}_{sel}_model0"] = t3_value(lm0, task, sel)
    er = edits[edits.task == "erase"]
    dppl = er.pivot_table(index=["model", "fact_id"], columns="selection", values="dppl")
    for base in ("N_i", "N_g"):
        for group in GROUPS:
            g, lo, hi, n = gain(base, group=group)
            key = f"gain_{base}" + ("" if group == "all" else f"_{group}")
            nums[key], nums[key + "_low"], nums[key + "_high"], nums[key + "_pairs"] = g, lo, hi, n
        for metric in ("gen", "loc"):
            nums[f"gain_{base}_{metric}"] = gain(base, metric=metric)[0]
        nums[f"dppl_diff_{base}"] = (finite_or_none((dppl["cas"] - dppl[base]).mean())
                                     if {"cas", base} <= set(dppl.columns) else None)
    upd = edits[edits.task == "update"]
    nums["n_update_edits"] = int(len(upd))
    nums["update_rel_mean"] = finite_or_none(upd.rel.mean()) if len(upd) else None
    nums["update_dppl_median"] = finite_or_none(upd.dppl.median()) if len(upd) else None
    nums["update_ppl_before"] = finite_or_none(upd.ppl_before.median()) if len(upd) else None
    best = abl.groupby("beta2").avg.mean() if len(abl) else pd.Series(dtype=float)
    nums["best_beta2"] = finite_or_none(best.idxmax()) if len(best) else None
    nums["avg_beta2_0"] = finite_or_none(best.get(0.0, np.nan))
    nums["avg_beta2_main"] = finite_or_none(best.get(float(p.beta2), np.nan))
    for k in list(nums):
        if k.startswith("gain_") and not k.endswith("_pairs"):
            nums[k + "_text"] = fmt(nums[k], "+.3f")
        if k.startswith("dppl_diff_"):
            nums[k + "_text"] = fmt(nums[k], "+.3g")
    nums["update_rel_mean_text"] = fmt(nums["update_rel_mean"], ".2f", "no update edit")
    nums["update_dppl_median_text"] = fmt(nums["update_dppl_median"], ".3g",
                                          "infinite (overflow)" if len(upd) else "no update edit")
    nums["update_ppl_before_text"] = fmt(nums["update_ppl_before"], ".3g", "no update edit")
    for k in ("avg_erase_cas_model0", "avg_erase_N_i_model0", "avg_erase_N_g_model0", "avg_update_cas_model0",
              "avg_update_N_i_model0", "avg_update_N_g_model0", "best_beta2", "avg_beta2_0", "avg_beta2_main"):
        nums[k + "_text"] = fmt(nums[k], ".2f" if not k.startswith("best") else "g")
    for sel in SEL_ORDER:
        nums[f"neurons_{sel}_text"] = fmt(nums[f"neurons_{sel}"], ".1f")
    nums["edited_queries_per_fact_text"] = fmt(nums["edited_queries_per_fact"], ".1f")

    # claims: pooled over models and tasks (tasks averaged per fact), the fact as the unit
    for cid, base, metric in (("cas_vs_ni", "N_i", "avg"), ("cas_vs_ng", "N_g", "avg"),
                              ("cas_gain_generalization", "N_i", "gen")):
        g, lo, hi, n = gain(base, metric=metric)
        ch.claim(cid, "all", g, lo, hi, n if g is not None else None,
                 why_not=None if g is not None else "no fact edited with both selections",
                 detail=f"{'tasks averaged per fact' if metric == 'avg' else 'Gen only'}; models pooled")
    llama3 = [m for m in (lm.name for lm in lms) if "llama-3-8b" in m.lower()]
    if llama3:
        part = edits[(edits.model == llama3[0]) & (edits.task == "erase")]
        wide = part.pivot_table(index="fact_id", columns="selection", values="avg")
        best = max(("N_i", "N_g"), key=lambda s: wide[s].mean())
        d = (wide["cas"] - wide[best]).dropna().to_numpy(float)
        from kqlib.paper.consistency import bootstrap_ci

        lo, hi = bootstrap_ci(d, n_boot=p.n_boot, seed=p.seed)
        ch.claim("cas_llama3_erasure", llama3[0], float(d.mean()) if d.size else None, lo, hi, int(d.size),
                 detail=f"best baseline {best} {wide[best].mean():.2f} → CAS {wide['cas'].mean():.2f}")
    else:
        ch.claim("cas_llama3_erasure", "all", why_not="LLaMA3-8b is not in this profile (use --profile paper)",
                 detail=f"{lm0}: N_i {nums['avg_erase_N_i_model0_text']}, N_g {nums['avg_erase_N_g_model0_text']}"
                        f" → CAS {nums['avg_erase_cas_model0_text']}")
    pooled = pooled_per_fact(edits)
    wide = pooled.pivot_table(index="fact_id", columns="selection", values="avg")
    cls = {f"{m}/{f}": c for (m, f), c in classes.items()}
    multi = edits.drop_duplicates(["model", "fact_id"])
    multi_kc = int(((multi["class"] == "K_C") & (multi.n_edited_queries >= 2)).sum())
    if {"cas", "N_i"} <= set(wide.columns):
        d = (wide["cas"] - wide["N_i"]).dropna()
        ki = d[[cls.get(f) == "K_I" for f in d.index]].to_numpy(float)
        kc = d[[cls.get(f) == "K_C" for f in d.index]].to_numpy(float)
    else:
        ki = kc = np.array([])
    if not ki.size or not kc.size:
        ch.claim("cas_gain_small_kc", "all", why_not=f"a class has no edited fact ({kc.size} K_C, {ki.size} K_I)")
    elif not multi_kc:
        ch.claim("cas_gain_small_kc", "all",
                 why_not="every K_C fact has a single edited query, where CAS = N_i = N_g")
    else:
        diff, lo, hi = share_difference_ci(ki, kc, n_boot=p.n_boot, seed=p.seed)
        ch.claim("cas_gain_small_kc", "all", diff, lo, hi, int(min(ki.size, kc.size)),
                 unit="facts (smaller class)", detail=f"gain over N_i: K_I {ki.mean():+.3f} (n={ki.size}), "
                                                      f"K_C {kc.mean():+.3f} (n={kc.size})")
    return nums
