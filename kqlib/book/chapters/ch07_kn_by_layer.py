"""Chapter 07 (knowledge neurons by layer): where each model's knowledge neurons sit, per relation and method,
from the KN sets the book already computed (no new attribution).

Depth of a neuron in layer l of a model with L layers: d = l / (L − 1) ∈ [0, 1] (0 = first layer, 1 = last).
Per query, the share of its KNs in layer l is |N_q ∩ layer l| / |N_q|; a relation's profile is the mean of these
shares over its queries (every query weighs the same, whatever its set size). The depth summary is the mean d
of the KNs, pooled per query first (a query's mean depth), with a percentile bootstrap over facts (facts
resampled whole: their phrasings are not independent).

The notebook ``book/07_kn_by_layer.py`` imports this module and :class:`~kqlib.book.chapter.Chapter` only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt  # heavy, but this module draws the chapter's figure
import numpy as np
import pandas as pd

from kqlib.book.figures import heat_table
from kqlib.book.report import records  # noqa: F401 (the notebook's K.records)
from kqlib.errors import ParameterError
from kqlib.paper.stats import cluster_bootstrap_ci

QUERY = ["model", "method", "relation", "fact_id", "pattern_index"]


def _check(neurons: pd.DataFrame, n_layers: Mapping[str, int]) -> None:
    missing = [c for c in QUERY + ["layer"] if c not in neurons.columns]
    if missing:
        raise ParameterError(f"the KN table lacks the column(s) {missing}: pass Localized.neurons (ch.localize())")
    unknown = sorted(set(neurons["model"]) - set(n_layers))
    if unknown:
        raise ParameterError(f"no layer count for model(s) {unknown}: pass {{model: n_layers}} for every model")


def layer_shares(neurons: pd.DataFrame, n_layers: Mapping[str, int]) -> pd.DataFrame:
    """Per (model, method, relation, layer): the mean over queries of the share of a query's KNs in that layer.

    ``neurons``: one row per (query, KN) with ``QUERY`` columns and ``layer``; ``n_layers``: {model: L}.
    Returns columns model, method, relation, layer, depth (= layer / (L − 1)), share, n_queries; the shares of
    one (model, method, relation) sum to 1 over its layers. Layers with no KN in any query have share 0."""
    _check(neurons, n_layers)
    if neurons.empty:
        return pd.DataFrame(columns=["model", "method", "relation", "layer", "depth", "share", "n_queries"])
    per_query = neurons.groupby(QUERY + ["layer"]).size().rename("k").reset_index()
    per_query["share"] = per_query["k"] / per_query.groupby(QUERY)["k"].transform("sum")
    rows = []
    for (model, method, relation), g in per_query.groupby(["model", "method", "relation"]):
        n_q = g.groupby(["fact_id", "pattern_index"]).ngroups
        L = int(n_layers[model])
        by_layer = g.groupby("layer")["share"].sum() / n_q  # queries without a KN in a layer add 0 there
        for layer in range(L):
            rows.append({"model": model, "method": method, "relation": relation, "layer": layer,
                         "depth": layer / max(L - 1, 1), "share": float(by_layer.get(layer, 0.0)), "n_queries": n_q})
    return pd.DataFrame(rows)


def depth_summary(neurons: pd.DataFrame, n_layers: Mapping[str, int], *, n_boot: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Per (model, method): the mean KN depth d = l / (L − 1) (each query's mean first, then the mean over
    queries), the share of KNs in the top third of the layers (d > 2/3), both with 95 % bootstrap intervals over
    facts, and the numbers of facts and queries."""
    _check(neurons, n_layers)
    cols = ["model", "method", "mean_depth", "depth_low", "depth_high", "top_third", "top_low", "top_high",
            "n_facts", "n_queries"]
    if neurons.empty:
        return pd.DataFrame(columns=cols)
    df = neurons.assign(depth=neurons["layer"] / neurons["model"].map(lambda m: max(int(n_layers[m]) - 1, 1)))
    q = (df.assign(top=(df["depth"] > 2 / 3).astype(float))
         .groupby(QUERY)[["depth", "top"]].mean().reset_index())
    rows = []
    for (model, method), g in q.groupby(["model", "method"]):
        facts = g["relation"].astype(str) + "/" + g["fact_id"].astype(str)
        d_lo, d_hi = cluster_bootstrap_ci(g["depth"], facts, n_boot=n_boot, seed=seed)
        t_lo, t_hi = cluster_bootstrap_ci(g["top"], facts, n_boot=n_boot, seed=seed)
        rows.append({"model": model, "method": method, "mean_depth": float(g["depth"].mean()),
                     "depth_low": d_lo, "depth_high": d_hi, "top_third": float(g["top"].mean()),
                     "top_low": t_lo, "top_high": t_hi, "n_facts": int(facts.nunique()), "n_queries": len(g)})
    return pd.DataFrame(rows, columns=cols)


def layer_figure(shares: pd.DataFrame, models: Sequence[str], method: str):
    """One heat table per model: relations (rows) × layers (columns), the share of a query's KNs in each layer
    (``shares`` from :func:`layer_shares`, one method). A model without KNs gets a panel that says so."""
    fig, axes = plt.subplots(1, len(models), figsize=(max(6.0, 0.42 * shares["layer"].max() + 3) * len(models)
                                                      if len(shares) else 6.0 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        s = shares[(shares["model"] == model) & (shares["method"] == method)]
        if s.empty:
            ax.text(0.5, 0.5, f"{model}: no knowledge neurons for {method}\n(no fact kept by the answer filter)",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        table = s.pivot(index="relation", columns="layer", values="share")
        heat_table(ax, table, fmt="{:.0%}", cmap="Blues", vmax=max(float(np.nanmax(table.values)), 1e-9),
                   xlabel="layer", ylabel="relation", title=f"{model} ({method}): share of a query's KNs per layer")
    fig.tight_layout()
    return fig


def layer_numbers(summary: pd.DataFrame, models: Sequence[str], method: str) -> dict:
    """Glued numbers of ``method``: per model (``depth_<model>``, ``top_third_<model>``), the first model's under
    ``depth_first`` / ``top_third_first`` (None when it has no KN), and ``n_models``."""
    s = summary[summary["method"] == method]
    first = s[s["model"] == models[0]] if len(models) else s.iloc[:0]
    out = {"n_models": len(models), "first_model": models[0] if len(models) else None,
           "depth_first": float(first["mean_depth"].iloc[0]) if len(first) else None,
           "top_third_first": float(first["top_third"].iloc[0]) if len(first) else None}
    for _, r in s.iterrows():
        key = str(r["model"]).replace("-", "_").replace(".", "_")
        out[f"depth_{key}"] = float(r["mean_depth"])
        out[f"top_third_{key}"] = float(r["top_third"])
    return out
