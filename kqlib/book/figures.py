"""Plot helpers shared by the book's chapters (drawing only: every number plotted is computed elsewhere).

All functions draw on axes they are given (or create a figure) and return the figure; the chapters call
``plt.show()`` themselves and save PNGs with :func:`save`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kqlib.book.report import output_dir


def save(fig, name: str) -> Path:
    """Save ``fig`` as ``<build dir>/figures/<name>.png`` (dpi 110); returns the path."""

    out = output_dir() / "figures" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    mark_empty(fig)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


EMPTY_NOTE = "nothing to show here:\nno fact or query of this kind in this run\n(too few facts; see the text)"


def mark_empty(fig, note: str = EMPTY_NOTE) -> int:
    """Write ``note`` across every panel of ``fig`` that draws no data (no line, marker, bar, violin, image or
    text of its own), so that a figure never shows an empty frame without words; returns how many panels."""
    n = 0
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" or not ax.get_visible():
            continue
        drawn = ax.lines or ax.collections or ax.images or ax.patches or ax.tables or ax.texts
        if not drawn:
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="0.35", fontsize=9)
            n += 1
    return n


def shared_top_neurons(scores, n_per_layer: int = 12) -> np.ndarray:
    """Column choice for side-by-side heatmaps of k queries: per layer, the ``n_per_layer`` neurons with the
    largest score (each query's scores divided by its max) summed over the queries. ``scores``: ``[k, L, N]``.
    Returns ``[L, n_per_layer]`` neuron indices, so that a column means the same neuron in every panel."""
    s = np.asarray(scores, dtype=np.float64)
    top = s.reshape(s.shape[0], -1).max(axis=1)
    top[~(top > 0)] = 1.0
    rel = s / top[:, None, None]
    combined = np.clip(rel, 0, None).sum(axis=0)  # [L, N]
    n = min(int(n_per_layer), combined.shape[1])
    return np.argsort(-combined, axis=1)[:, :n]


def query_heatmaps(axes, scores, titles: Sequence[str], n_per_layer: int = 12, vmax: float = 1.0, cmap="Blues",
                   title_width: int = 34):
    """One heatmap per query (layers x the shared top neurons of :func:`shared_top_neurons`), values =
    score / max score of that query, clipped at 0; titles wrapped at ``title_width`` characters per line
    (explicit newlines kept). Returns the last image (for a colorbar)."""
    s = np.asarray(scores, dtype=np.float64)
    cols = shared_top_neurons(s, n_per_layer)
    image = None
    for ax, q, title in zip(axes, s, titles):
        top = q.max()
        rel = np.clip(q / (top if top > 0 else 1.0), 0, None)
        mat = np.take_along_axis(rel, cols, axis=1)
        image = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, origin="lower",
                          interpolation="nearest")
        ax.set_title("\n".join(line for part in str(title).split("\n")
                               for line in (textwrap.wrap(part, title_width) or [""])), fontsize=9)
        ax.set_xlabel(f"top-{cols.shape[1]} neurons / layer")
        ax.set_ylabel("layer")
        ax.grid(False)
    return image


def violins_with_threshold(ax, data, x: str, y: str, threshold: float | None = 0.3, order=None, hue=None,
                           color="#8fb3d9", label_threshold: str | None = None):
    """Violin plot of ``data[y]`` per ``data[x]`` with the points overlaid (coloured by ``hue``) and a
    horizontal threshold line."""
    import seaborn as sns  # heavy: seaborn (and matplotlib), only to draw

    if len(data):
        n_per = data.groupby(x)[y].count()
        kw = dict(data=data, x=x, y=y, order=order, ax=ax)
        if (n_per >= 2).any():
            sns.violinplot(**kw, color=color, cut=0, inner=None, density_norm="width", linewidth=0.8)
        if hue is None:
            sns.stripplot(**kw, color="#1f3b5c", size=3.5, jitter=0.15)
        else:
            sns.stripplot(**kw, hue=hue, size=3.5, jitter=0.15, dodge=False, palette="dark")
    if threshold is not None:
        ax.axhline(threshold, color="#c0392b", linestyle="--", linewidth=1.2,
                   label=label_threshold or f"θ = {threshold:g}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    return ax.figure


def heat_table(ax, table, fmt: str = "{:.0%}", cmap="Reds", vmin: float = 0.0, vmax: float = 1.0,
               xlabel: str = "", ylabel: str = "", title: str = ""):
    """A small annotated heat table of a 2-D frame (index = rows, columns = columns); NaN cells are blank."""
    vals = np.asarray(table, dtype=np.float64)
    ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(vals.shape[1]), [f"{c:g}" if isinstance(c, float) else str(c) for c in table.columns])
    ax.set_yticks(range(vals.shape[0]), [f"{r:g}" if isinstance(r, float) else str(r) for r in table.index])
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if np.isfinite(vals[i, j]):
                dark = (vals[i, j] - vmin) / (vmax - vmin or 1) > 0.6
                ax.text(j, i, fmt.format(vals[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(False)
    return ax.figure



def path_points(table):
    """Two panels from :func:`kqlib.paper.path_points.summary`: median error (log-log) and mean Jaccard vs points."""
    # heavy: matplotlib and seaborn, only to draw
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    style = "model" if table.model.nunique() > 1 else None
    sns.lineplot(data=table, x="points", y="median_error", hue="rule", style=style, markers=True, ax=axes[0])
    axes[0].set(xscale="log", yscale="log", xlabel="path points n", ylabel="median relative error")
    sns.lineplot(data=table, x="points", y="mean_jaccard", hue="rule", style=style, markers=True, ax=axes[1])
    axes[1].set(xscale="log", xlabel="path points n", ylabel="mean Jaccard vs reference", ylim=(0, 1.02))
    fig.tight_layout()
    return fig


def violin_figure(cs: pd.DataFrame, models: Sequence[str], kind: str = "cs2", threshold: float = 0.3):
    """CS per relation (methods pooled, one dot per fact and method), one panel per model, line at θ."""
    import matplotlib.pyplot as plt  # heavy: matplotlib, only to draw

    rel_order = sorted(cs.relation.unique(), key=lambda r: int(r[1:]))
    fig, axes = plt.subplots(1, len(models), figsize=(max(5.0, 1.2 * len(rel_order)) * len(models), 4.2),
                             sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = cs[cs.model == model]
        violins_with_threshold(ax, part, x="relation", y=kind, threshold=threshold, order=rel_order, hue="method")
        ax.set_title(f"{model}: {part.fact_id.nunique()} facts")
        ax.set_ylabel(kind.upper())
    fig.tight_layout()
    return fig
