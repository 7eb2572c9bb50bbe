"""The setup every chapter repeats, in one place: parameters, clock, models, localized data, claims, results.

A chapter notebook does::

    ch = Chapter("01_kl_reexamination", globals())   # reads the parameters its `parameters` cell declares
    lms = ch.models()                                 # loads ch.p.models
    data = ch.localize()                              # ParaRel facts + KN sets of every model (cached)
    t2 = ch.call(K.table2, edits, cs, shares)         # K's keyword-only parameters from the chapter's (ch.p)
    ch.claim("ki_majority", model, estimate, low, high, n)   # one row of "Paper vs this run"
    ch.paper_vs_run()                                        # the table, generated from claims.toml
    ch.glue(numbers); ch.finish(extra results)               # glue into the prose, write the results JSON

``Chapter.finish`` writes ``_build/results/<chapter>.json`` with the glued numbers, the claim rows
(``numbers["claims"]``, read by the scorecard), the figures saved with :meth:`Chapter.save` and the run record
(exactly the declared parameters, the profile, models and timing).
"""

from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import seaborn as sns

import kqlib
from kqlib.book import figures, report
from kqlib.book.claims import verdicts as V
from kqlib.book.profiles import declared_parameters, rule_kw
from kqlib.book.site.data_export import write_table
from kqlib.errors import ParameterError, TooFewFacts
from kqlib.paper import scans
from kqlib.paper.consistency import consistency_table
from kqlib.paper.localization import localize
from kqlib.paper.path_rules import setting

PLAIN = (int, float, str, bool, list, tuple, dict, type(None))


def declared_names(name: str) -> list[str] | None:
    """Names of the chapter's ``parameters`` cell, from ``<name>.py`` beside the running kernel (the book's
    chapter folder) or under ``book/``; None when the source is not found."""
    for path in (Path(f"{name}.py"), Path("book") / f"{name}.py"):
        if path.exists():
            return list(declared_parameters(path))
    return None


class Chapter:
    """One chapter's run: its parameters (``ch.p.NAME``), models, data, claims, numbers and figures."""

    def __init__(self, name: str, namespace: Mapping[str, Any], names: Sequence[str] | None = None):
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
        # rule, tol and query_filter: the book's defaults unless the chapter declares them
        self.p = SimpleNamespace(**{"rule": "adaptive", "tol": 1e-2, "query_filter": "correct", **self.params},
                                 executor=self.executor, ray_address=self.ray_address)
        self._scanned: dict = {}  # model name -> its ParaRel scan (before the query filter)
        self.left_out: dict[str, str] = {}  # model name -> why it was left out (too few facts)
        self._declared: dict[str, Any] = {}  # declared values of parameters changed in place (models)
        self.lms: list = []
        self.numbers: dict[str, Any] = {}
        self.claims: list[dict] = []
        self.figures: dict[str, str] = {}
        report.quiet()
        sns.set_theme(style="whitegrid", context="notebook")
        pd.set_option("display.max_colwidth", 80)

    @property
    def rule_kw(self) -> dict:
        return self.call(rule_kw)

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, each keyword-only parameter of ``fn`` that ``kwargs`` leaves out taken from the
        chapter's parameter of that name (``ch.p``). One without a default that the chapter does not have is
        refused before the call (:class:`~kqlib.errors.ParameterError`); one with a default keeps it. A chapter
        module's function takes plain values::

            def table2(edits, cs, shares, *, edit_method, cs_kind, n_boot, seed): ...

            table2 = ch.call(K.table2, edits, cs, shares)            # n_boot, seed, ... are the chapter's
            quick = ch.call(K.table2, edits, cs, shares, n_boot=200)  # an explicit keyword wins
        """
        filled = {}
        for name, par in inspect.signature(fn).parameters.items():
            if par.kind is not par.KEYWORD_ONLY or name in kwargs:
                continue
            if hasattr(self.p, name):
                filled[name] = getattr(self.p, name)
            elif par.default is par.empty:
                raise ParameterError(f"{getattr(fn, '__qualname__', fn)}() needs the parameter {name!r}, which chapter "
                                     f"{self.name} does not declare: add it to the parameters cell or pass {name}=...")
        return fn(*args, **kwargs, **filled)

    # ------------------------------------------------------------------------------------- models, data

    def models(self) -> list:
        """Load ``p.models`` (once)."""
        if not self.lms:
            self.lms = [kqlib.load(n) for n in self.p.models]
        return self.lms

    def model_table(self):
        return report.model_table(self.models())

    def sizes(self) -> dict[str, dict]:
        return {lm.name: report.model_size(lm) for lm in self.models()}

    def localize(self, methods: Sequence[str] | None = None, verbose: bool = True,
                 query_filter: str | None = None, min_facts: int = 1, path_setting: str | None = None) -> "Localized":
        """ParaRel facts each model answers and the KN sets of their queries under ``methods`` (default
        ``p.methods``), with the chapter's rule (:attr:`rule_kw`; or ``path_setting``, e.g. ``"riemann-20"``, a label
        of :func:`kqlib.paper.path_rules.setting`), ``site`` and ``t_threshold`` (attributions come from the on-disk
        cache when an earlier chapter computed them).

        The book's one answer filter: a fact is kept (``relations``, ``n_facts_per_relation``, ``seed``) when the
        model answers at least two of its phrasings top-1, for every chapter and either filter; ``query_filter``
        (default ``p.query_filter``) then says which of its queries enter: ``"correct"`` the answered ones, so
        consistency, classes, interventions and edits all see the same queries, or ``"all"``.

        The scan is done once per model, data and parameters (:func:`kqlib.paper.scans.scan`, cached on disk). A
        model that keeps fewer than ``min_facts`` facts is left out with a warning; when none is left the chapter
        stops with :class:`~kqlib.errors.TooFewFacts` (what each scan found, what to run instead)."""
        p = self.p
        methods = list(methods or p.methods)
        query_filter = query_filter or p.query_filter
        path = self.rule_kw if path_setting is None else rule_kw(**setting(path_setting, tol=getattr(p, "tol", None)))
        for lm in self.models():
            if lm.name not in self._scanned:
                self._scanned[lm.name] = scans.scan(lm, p.relations or None, p.n_facts_per_relation or None,
                                              seed=p.seed, min_correct=2, progress=False)
        ok = scans.require_facts({lm.name: self._scanned[lm.name] for lm in self.lms}, min_facts, f"chapter {self.name}",
                           stacklevel=3)
        self._leave_out({lm.name: f"keeps {len(self._scanned[lm.name])} ParaRel fact(s), fewer than the {min_facts} "
                                  f"needed" for lm in self.lms if lm.name not in ok})
        datasets, locs = {}, {}
        for lm in self.lms:
            t0 = time.time()
            ds = self._scanned[lm.name].with_queries(query_filter)
            datasets[lm.name] = ds
            # threads: the cores free now, looked at again between queries (the book is an edge: it may choose)
            locs[lm.name] = localize(lm, ds.queries, methods, **path, site=p.site, t=p.t_threshold,
                                     threads="auto",
                                     progress=False, executor=self.executor, address=self.ray_address)
            if verbose:
                print(f"{lm.name}: {len(ds)} facts, {len(ds.queries)} queries ({query_filter}), "
                      f"{len(ds.relations())} relations; {len(methods)} method(s) localized in {time.time() - t0:.0f} s")
        self._require_neurons(datasets, locs, methods)
        return Localized(self.models(), datasets, locs, methods)

    def _require_neurons(self, datasets: dict, locs: dict, methods: Sequence[str]) -> None:
        """A model none of whose queries has a knowledge neuron has nothing to measure: left out with a warning,
        or the chapter stops (:class:`~kqlib.errors.TooFewFacts`) when no model is left."""
        p = self.p
        why = {m: f"none of its {len(datasets[m].queries)} queries has a knowledge neuron ({', '.join(methods)}, "
                  f"t_threshold={p.t_threshold}, site={p.site}): nothing to measure" for m, loc in locs.items()
               if not (loc.queries["n_neurons"] > 0).any()}
        if not why:
            return
        advice = ("Lower t_threshold (the paper's is 0.2) or look at the model's attributions with "
                  "`kq attribute --model NAME`.")
        text = "; ".join(f"model {m!r}: {w}" for m, w in why.items())
        if len(why) == len(locs):
            raise TooFewFacts(f"chapter {self.name}: {text}. {advice}")
        warnings.warn(f"chapter {self.name}: left out {text}. {advice}", stacklevel=3)
        for m in why:
            datasets.pop(m)
            locs.pop(m)
        self._leave_out(why)

    def _leave_out(self, why: Mapping[str, str]) -> None:
        """Drop models (name -> why) from ``lms`` and ``p.models`` in place, so the notebook's own ``lms`` and
        ``models`` follow; the run record keeps the declared list."""
        names = list(why)
        if not names:
            return
        keep = [i for i, lm in enumerate(self.lms) if lm.name not in names]
        self.left_out.update(why)
        self._declared.setdefault("models", list(self.p.models))
        if len(self.p.models) == len(self.lms):
            kept = [self.p.models[i] for i in keep]
            if isinstance(self.p.models, list):
                self.p.models[:] = kept  # in place: the notebook's `models` is this list
            else:
                self.p.models = kept
        self.lms[:] = [self.lms[i] for i in keep]  # in place: the notebook's `lms` is this list
        print(f"left out: {', '.join(names)}; going on with {', '.join(lm.name for lm in self.lms)}")

    # --------------------------------------------------------------------------------- claims, results

    def claim(self, claim_id: str, model: str = "all", estimate=None, low=None, high=None, n=None, **kw) -> dict:
        """Judge one claim of ``claims.toml`` (:func:`kqlib.book.claims.verdicts.claim_row`) and keep the row."""
        row = V.claim_row(claim_id, model, estimate, low, high, n, **kw)
        if row["chapter"] != self.name:
            raise ParameterError(f"claim {claim_id!r} belongs to chapter {row['chapter']}, not {self.name}")
        self.claims.append(row)
        return row

    def claims_from(self, measurements: Iterable[Mapping[str, Any]]) -> list[dict]:
        """Judge and keep every measurement a chapter module returned
        (:func:`kqlib.book.claims.verdicts.measurement`); returns the rows."""
        return [self.claim(**m) for m in measurements]

    def paper_vs_run(self):
        """The "Paper vs this run" table of this chapter's claims (all of its claims in claims.toml must have
        been judged)."""
        mine = {c.id for c in V.claims(self.name)}
        done = {r["claim"] for r in self.claims}
        if mine - done:
            raise ParameterError(f"chapter {self.name} has not judged claim(s) {sorted(mine - done)}")
        return V.table(self.claims)

    def save(self, fig, name: str, key: str | None = None):
        path = figures.save(fig, name)
        self.figures[key or name] = path.name
        return path

    def export(self, name: str, df, figure=None, description: str = "") -> None:
        """Write the tidy frame behind a figure/table to ``_build/data/<chapter>/<name>.csv`` (linked from the page
        with its schema; :func:`kqlib.book.site.data_export.write_table`)."""
        write_table(self.name, name, df, figure=figure, description=description)

    def export_localization(self, data: "Localized", cs) -> None:
        """The three frames the fact explorer reads: every query, every knowledge neuron, every fact's CS."""
        self.export("queries", data.facts, description="every query of every fact that enters the book (after the "
                    "answer filter), with the model's p(answer) and rank")
        self.export("kn_sets", data.neurons, description="knowledge neurons of every (model, method, query)")
        self.export("consistency", cs, description="one row per (model, method, fact): KN-set sizes and consistency scores")

    def glue(self, numbers: Mapping[str, Any]) -> None:
        """Keep ``numbers`` for the results JSON and glue the scalars into the prose."""
        self.numbers.update(numbers)
        report.glue_numbers({k: v for k, v in numbers.items() if v is None or isinstance(v, (int, float, str))})

    def glue_display(self, key: str, obj) -> None:
        """Glue a displayable object (a table, a figure) under ``key`` for pasting elsewhere in the book."""
        # heavy: myst_nb loads the whole MyST/Sphinx stack, needed only when gluing
        from myst_nb import glue

        glue(key, obj, display=False)

    def finish(self, **results) -> Path:
        """Write the results JSON: glued numbers, ``claims``, ``figures``, ``results`` and the run record."""
        out = dict(self.numbers)
        out.update(results)
        out["claims"] = self.claims
        out["figures"] = dict(self.figures)
        if self.left_out:
            out["models_left_out"] = dict(self.left_out)
        run = report.run_record(self.lms, parameters={**self.params, **self._declared}, started=self.started,
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
        locs = locs if locs is not None else self.locs
        kn = pd.concat([l.neurons for l in locs.values()], ignore_index=True)
        q = pd.concat([l.queries for l in locs.values()], ignore_index=True)
        cs = consistency_table(kn, queries=q)
        facts = self.facts.drop_duplicates(["model", "fact_id"])[["model", "fact_id", "subject", "obj"]]
        cs = cs.merge(facts, on=["model", "fact_id"], how="left")
        return cs.dropna(subset=[kind]).reset_index(drop=True)
