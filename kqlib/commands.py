"""``kq data`` and ``kq attribute``: ParaRel statistics and knowledge-neuron attribution from the shell."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from kqlib.attribution import METHODS, RULES, AttributionConfig, knowledge_neurons
from kqlib.cli_args import Command, check_output_file, check_writable_folder, float_in, id_list, int_at_least
from kqlib.core import models
from kqlib.core.threads import set_threads
from kqlib.errors import ParameterError
from kqlib.paper import pararel, scans
from kqlib.runs import many
from kqlib.runs.cache import AttributionCache
from kqlib.runs.ray_pool import connect


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="embedded name (smollm2-135m, gemma3-270m), Hugging Face id or local directory")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--pararel", default=None, help="ParaRel directory (default: $KQLIB_PARAREL, ../shared, download)")


def _relations(text: str | None, option: str) -> list[str] | None:
    return id_list(text, option, "P103,P36")


def _check_inputs(args, relations: list[str] | None, model: bool = True) -> None:
    """Everything that can be checked without loading a model: the device, the model name or folder, the
    ParaRel folder and the relations (their pattern files are read)."""
    if model:
        models.resolve_device(args.device)
        models.check_model_name(args.model)
    base = pararel.pararel_root(args.pararel)
    if relations is None:
        pararel._require_relations(pararel.available_relations(base), base)
    else:
        for rel in relations:
            pararel.load_patterns(rel, base)  # an unknown relation or a damaged file is refused here


# ---------------------------------------------------------------------------------------------- data


def _data_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--relations", default=None, help="comma-separated relation ids, e.g. P103,P37 (default: all)")
    p.add_argument("--sample", type=int_at_least(0), default=20,
                   help="facts per relation scanned, in a seeded order (default 20; 0: every fact)")
    p.add_argument("--top-k", type=int_at_least(1), default=1,
                   help="an answer counts when its first token is within top-k (>= 1)")
    p.add_argument("--no-model", action="store_true", help="only count patterns and facts; load no model")
    p.add_argument("--out", default=None, help="also write the table to this .csv or .parquet file")


def _knowledge(lm, args, relations) -> "object":
    """``kq data --model``: per relation, of ``--sample`` seeded facts, those the model answers on >= 1, 2 and 4
    phrasings (the cached scan, :func:`kqlib.paper.scans.what_it_knows`), best first, and the ``-p`` line."""
    ds = scans.scan(lm, relations, None, seed=0, min_correct=1, top_k=args.top_k, max_scan=args.sample or None,
                    root=args.pararel)
    base = pararel.pararel_root(args.pararel)
    table = scans.what_it_knows(ds, {r: len(pararel.load_facts(r, base)) for r in ds.scan})
    print(f"What {args.model} knows: per relation, of {args.sample or 'all'} seeded facts (scanned), those whose "
          f"answer is its top-{args.top_k} next token on >= 1, >= 2 and >= 4 phrasings"
          f"{' (scan read from the cache)' if ds.params.get('cached') else ''}. The book keeps a fact answered "
          f"on >= 2.")
    print(table.to_string(index=False))
    best = scans.suggest_relations(table)
    if best:
        counts = dict(zip(table.relation, table.answered_2))
        print(f"\nBest relations for this model (facts on >= 2 phrasings): "
              f"{', '.join(f'{r} {counts[r]}' for r in best)}. Rerun a chapter on them:\n"
              f"  kq run 01 --profile smoke --model {args.model} {scans.relations_option(best)}")
    else:
        print(f"\n{args.model} answers none of these facts on two phrasings: the book's chapters cannot measure it "
              f"here. Try more facts (--sample 0 scans every fact) or other relations.")
    return table


def _data_run(args) -> int:
    relations = _relations(args.relations, "--relations")
    check_output_file(args.out, suffixes=(".csv", ".parquet"))
    _check_inputs(args, relations, model=not args.no_model)
    if args.no_model:
        table = pararel.relation_stats(None, root=args.pararel, relations=relations, sample=args.sample,
                                       top_k=args.top_k)
        print(table.to_string(index=False))
    else:
        table = _knowledge(models.load(args.model, device=args.device), args, relations)
    if args.out:
        if args.out.lower().endswith(".parquet"):
            table.to_parquet(args.out, index=False)
        else:
            table.to_csv(args.out, index=False)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------- attribute


def _attribute_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--relation", default="P103", help="ParaRel relation id(s), comma-separated (default P103)")
    p.add_argument("--facts", type=int_at_least(1), default=5, help="facts per relation the model answers (default 5)")
    p.add_argument("--method", default="ig", help="ig | sig | amig, or several comma-separated")
    p.add_argument("--steps", type=int_at_least(1), default=None,
                   help="path points of a fixed rule, riemann or gauss (default 20)")
    p.add_argument("--rule", default="riemann", choices=list(RULES),
                   help="integration rule: riemann (the paper's, default), gauss (Gauss-Legendre) or adaptive "
                        "(error-controlled to --tol; places its own points)")
    p.add_argument("--tol", type=float, default=None,
                   help="rule adaptive: estimated max abs error / max |score| (default 0.01)")
    p.add_argument("--threads", default="auto", help="torch threads: a number or 'auto' (default: the cores free "
                   "now, looked at again between queries)")
    p.add_argument("--site", default="post", choices=["post", "pre"], help="neuron site (default post)")
    p.add_argument("--threshold", type=float_in(0.0, 1.0, " (a fraction of the top score; 1 would keep none)"),
                   default=0.2, help="knowledge neurons: score > t * max, 0 <= t < 1 (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="fact sampling seed")
    p.add_argument("--top-k", type=int_at_least(1), default=1,
                   help="keep facts whose answer is within the model's top-k")
    p.add_argument("--batch-size", type=int_at_least(1), default=None, help="path points per chunk (memory bound)")
    p.add_argument("--out", default=None, help="tidy table of knowledge neurons (.csv or .parquet); "
                   "default kq-attribute-<model>-<relation>-<method>.csv")
    p.add_argument("--cache", default=None, help="attribution cache: a directory or a URL (file://, s3://, gs://; "
                   "shared by all Ray workers) (default $KQLIB_CACHE/attributions)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: this process; ray: an actor pool on a Ray cluster, one model per actor")
    p.add_argument("--address", default=None, help="with --executor ray: auto | HOST:PORT | ray://HOST:PORT "
                   "(default: a local Ray instance)")
    p.add_argument("--workers", type=int_at_least(1), default=None,
                   help="with --executor ray: actors (default: one per GPU "
                   "of the cluster, else one per CPU)")


def _attribute_run(args) -> int:
    # every input is checked here, before the first model load or attribution
    methods = id_list(args.method, "--method", "ig,sig")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ParameterError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.facts < 1 or (args.steps is not None and args.steps < 1):
        raise ParameterError("--facts must be >= 1 and --steps >= 1")
    try:
        config = AttributionConfig(steps=args.steps, rule=args.rule, tol=args.tol)
    except ParameterError as exc:  # the library's message, in the command's words
        raise ParameterError(str(exc).replace("steps=", "--steps ").replace("tol=", "--tol ")) from None
    if args.threshold >= 1.0:
        raise ParameterError(f"--threshold {args.threshold:g} keeps no neuron (score > t * max needs t < 1); "
                             f"use 0 <= t < 1, e.g. the paper's 0.2.")
    ray_only = [o for o, v in (("--workers", args.workers), ("--address", args.address)) if v is not None]
    if args.executor != "ray" and ray_only:
        raise ParameterError(f"{' and '.join(ray_only)} apply to --executor ray only; add --executor ray or "
                             f"leave {' and '.join(ray_only)} out.")
    relations = _relations(args.relation, "--relation")
    out = Path(args.out or f"kq-attribute-{Path(args.model).name}-{args.relation.replace(',', '_')}-"
                           f"{'_'.join(methods)}.csv")
    check_output_file(str(out), suffixes=(".csv", ".parquet"))
    check_writable_folder(args.cache, "--cache")
    _check_inputs(args, relations)
    set_threads(args.threads)
    t0 = time.time()
    if args.executor == "ray":  # an unreachable cluster or cache fails here, before any work
        connect(args.address)
    AttributionCache(args.cache).check()
    lm = models.load(args.model, device=args.device)
    data = pararel.build_dataset(lm, relations=relations, n_per_relation=args.facts, seed=args.seed,
                                 top_k=args.top_k, root=args.pararel)
    queries = data.queries
    print(f"[kq] {len(data)} facts, {len(queries)} queries from {', '.join(data.relations())}", file=sys.stderr)
    rows, diag_rows = [], []
    for method in methods:
        scores, diags = many.attribute_many(lm, queries, method=method, steps=args.steps, site=args.site,
                                            rule=args.rule, tol=args.tol, batch_size=args.batch_size,
                                            cache=args.cache, desc=f"{method} attribution", executor=args.executor,
                                            address=args.address, workers=args.workers, diagnostics=True,
                                            threads=args.threads if args.executor == "local" else None)
        for q, s, d in zip(queries, scores, diags):
            diag_rows.append(dict(method=method, relation=q.relation, fact_id=q.fact_id,
                                  pattern_index=q.pattern_index, prompt=q.prompt, **_diagnostics_row(d)))
            top = float(s.max())
            for layer, neuron in sorted(knowledge_neurons(s, args.threshold)):
                rows.append(dict(model=args.model, method=method, site=args.site, steps=config.steps, rule=args.rule,
                                 relation=q.relation, fact_id=q.fact_id, subject=q.subject, obj=q.obj,
                                 pattern_index=q.pattern_index, prompt=q.prompt, target_id=q.target_id,
                                 layer=layer, neuron=neuron, score=float(s[layer, neuron]),
                                 rel_score=float(s[layer, neuron]) / top))
    table = pd.DataFrame(rows)
    if out.suffix.lower() == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    side = out.with_name(f"{out.stem}-diagnostics{out.suffix}")
    diag_table = pd.DataFrame(diag_rows)
    if side.suffix.lower() == ".parquet":
        diag_table.to_parquet(side, index=False)
    else:
        diag_table.to_csv(side, index=False)
    per_query = table.groupby(["method", "prompt"]).size() if len(table) else []
    print(f"[kq] wrote {out}: {len(table)} knowledge neurons "
          f"(median {int(pd.Series(per_query).median()) if len(table) else 0} per query) in {time.time() - t0:.0f} s")
    known = diag_table.dropna(subset=["points"]) if len(diag_table) else diag_table
    if len(known):
        est = known["error_estimate"].dropna()
        print(f"[kq] wrote {side}: per query, {args.rule} rule: median {known['points'].median():.0f} path points, "
              f"largest completeness gap {known['max_completeness_gap'].max():.2g}"
              + (f", estimated error median {est.median():.2g} (max {est.max():.2g})" if len(est) else ""))
    return 0


def _diagnostics_row(d) -> dict:
    """One row of the diagnostics side table (empty values for an entry cached without diagnostics)."""
    if d is None:
        return dict(points=None, error_estimate=None, converged=None, max_completeness_gap=None,
                    points_per_layer=None)
    gaps = d.completeness_gap or []
    return dict(points=d.total_points, error_estimate=d.error_estimate, converged=d.converged,
                max_completeness_gap=max(gaps) if gaps else None,
                points_per_layer=" ".join(str(n) for n in d.points))


DATA = Command("data", "what a model knows: per ParaRel relation, the facts it answers on >= 2 and >= 4 "
               "phrasings (cached scan) and the -p relations=[...] to rerun a chapter with; --no-model: "
               "patterns and facts only", _data_args, _data_run)
ATTRIBUTE = Command("attribute", "knowledge-neuron attribution of ParaRel facts; saves a tidy table",
                    _attribute_args, _attribute_run)
