"""Chapter 06 ("How many path points?"): every model's answered queries under each path rule against a
Gauss–Legendre reference, per fact the class under each rule, and the cheap rankings (1-point, gauss-4).

The computations are :mod:`kqlib.paper.path_rules` and :mod:`kqlib.paper.path_points`; this module arranges them
per model for the notebook ``book/06_path_points.py``, which imports it and
:class:`~kqlib.book.chapter.Chapter` only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from kqlib.book import figures
from kqlib.paper import path_points, path_rules
from kqlib.paper.path_rules import fact_summary, headline  # noqa: F401 (the notebook's K.*)


def per_query(lms: Sequence, queries: Mapping[str, list], settings, **common) -> pd.DataFrame:
    """One row per (model, query, rule): error and KN-set Jaccard against the reference
    (:func:`kqlib.paper.path_rules.per_query` for each model)."""
    return pd.concat([path_rules.per_query(lm, queries[lm.name], settings, **common) for lm in lms],
                     ignore_index=True)


def per_query_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, rule): mean error and mean KN-set Jaccard with their intervals over queries."""
    return path_rules.query_summary(df).merge(
        path_rules.query_summary(df, "jaccard")[["model", "setting", "mean", "ci_low", "ci_high"]],
        on=["model", "setting"], suffixes=("_error", "_jaccard"))


def path_points_figure(df: pd.DataFrame):
    """Error and KN-set Jaccard against the number of path points, per rule and model."""
    return figures.path_points(path_points.summary(df))


def per_fact(lms: Sequence, queries: Mapping[str, list], settings, *, theta: float, kind: str,
             **common) -> pd.DataFrame:
    """One row per (model, fact, rule): CS2 and the class at ``theta`` under the rule and under the reference."""
    return pd.concat([path_rules.per_fact(lm, queries[lm.name], settings, theta=theta, kind=kind, **common)
                      for lm in lms], ignore_index=True)


def cheap_rankings(lms: Sequence, queries: Mapping[str, list], cheap, **kw) -> pd.DataFrame:
    """Per (model, query, cheap rule): Spearman correlation and KN-set Jaccard against converged IG."""
    return pd.concat([path_rules.cheap_table(lm, queries[lm.name], cheap, **kw) for lm in lms], ignore_index=True)


def cheap_summary(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per (model, cheap rule): mean Spearman and mean KN-set Jaccard with intervals over queries."""
    return path_rules.query_summary(ranks, "spearman").merge(
        path_rules.query_summary(ranks, "jaccard")[["model", "setting", "mean", "ci_low", "ci_high"]],
        on=["model", "setting"], suffixes=("_spearman", "_jaccard"))
