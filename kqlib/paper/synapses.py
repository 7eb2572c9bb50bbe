"""Dynamic KN selection (paper §4.2): does attention select the knowledge neurons a query uses?

For a query q = (prompt x, answer token o) with knowledge neurons N_q (its KN set from :func:`kqlib.localize`):

1. **Knowledge synapses.** S = :func:`kqlib.attribution.attribute_attention` ``(lm, x, o, steps)`` are the
   integrated-gradients scores ``[n_layers, n_heads, T]`` of the last position's attention probabilities
   for p(o | x); the synapses are K_q = {(l, h, k) : S[l, h, k] > t · max S}
   (:func:`kqlib.attribution.knowledge_synapses`).
2. **Control.** C_q = |K_q| entries drawn uniformly at random among the entries that are not synapses
   (:func:`kqlib.core.attention.random_non_synapses`, seeded per query by ``seed`` and the prompt).
3. **Intervention.** For E ∈ {K_q, C_q} and a factor α, every attention probability of the last query
   position P^{(l,h)}[-1, k], (l, h, k) ∈ E, is multiplied by α during one forward pass of x
   (:func:`kqlib.core.attention.scale_attention`; rows are not renormalised unless ``renormalize=True``).
   α = 0 suppresses, α = 2 enhances, α = 1 is an exact no-op.
4. **Measures.** With a_n and a'_n the activations of neuron n ∈ N_q at the last position before and
   after the intervention (the neuron site of :mod:`kqlib.core.hooks`, ``site="post"`` by default):

   * ΔActivation (``d_act``): the relative change of the KNs' summed activation magnitude, measured along
     each neuron's original sign,

         ΔAct = Σ_{n∈N_q} sign(a_n) · (a'_n − a_n) / Σ_{n∈N_q} |a_n|,

     so ΔAct = −1 when every KN is silenced, 0 when nothing changes, > 0 when the KNs are strengthened, and
     < −1 when activations are pushed past 0 to the opposite sign; it equals (Σ|a'_n| − Σ|a_n|) / Σ|a_n|
     whenever no activation changes sign. NaN when N_q is empty or all its activations are 0.
   * ``act_shift``: the unsigned relative change ‖a' − a‖₂ / ‖a‖₂ of the KN activation vector.
   * ΔProb (``d_prob``): (p'(o | x) − p(o | x)) / p(o | x), as in :mod:`kqlib.paper.mapping`; ``flipped``: the
     top-1 prediction leaves o (α < 1) or becomes o (α > 1).

:func:`run_synapse_experiment` returns one tidy row per (query, set, α). Synapse scores are cached on disk
(:class:`kqlib.runs.cache.AttributionCache`, method ``"attention-ig"``), so a rerun recomputes nothing.
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from kqlib.core.attention import random_non_synapses, scale_attention, synapse_entries
from kqlib.attribution import AttributionConfig, attribute_attention, knowledge_synapses
from kqlib.runs.cache import AttributionCache
from kqlib.errors import ParameterError
from kqlib.core.hooks import capture

SETS = ("synapse", "control")
MATCHED = "matched"  # the attention-mass-matched control (``run_synapse_experiment(..., matched=True)``)


def _prompt_target(q) -> tuple[str, int]:
    if isinstance(q, (tuple, list)) and len(q) == 2:
        return str(q[0]), int(q[1])
    return str(q.prompt), int(q.target_id)


def synapse_scores(lm, prompt: str, target_id: int, *, steps: int = 20, cache: AttributionCache | str | None = None,
                   use_cache: bool = True) -> torch.Tensor:
    """:func:`kqlib.attribution.attribute_attention` scores ``[L, H, T]``, through the on-disk attribution cache."""
    store = cache if isinstance(cache, AttributionCache) else AttributionCache(cache)
    key = AttributionConfig(method="attention-ig", steps=steps).key(lm.fingerprint, prompt, int(target_id))
    hit = store.get(key) if use_cache else None
    if hit is not None:
        return hit
    scores = attribute_attention(lm, prompt, int(target_id), steps=steps)
    if use_cache:
        store.put(key, scores, {"model": lm.name, "prompt": prompt, "target": int(target_id),
                                "method": "attention-ig", "steps": steps})
    return scores


def query_seed(seed: int, prompt: str, target_id: int) -> int:
    """The per-query seed of the control draw (stable across runs and processes)."""
    return zlib.crc32(f"{seed}|{prompt}|{int(target_id)}".encode())


def synapse_sets(scores: torch.Tensor, t: float, seed: int) -> dict[str, set]:
    """``{"synapse": K_q, "control": C_q}``: the synapses of ``scores`` and as many random non-synapses."""
    syn = knowledge_synapses(scores, t)
    ctrl = random_non_synapses(scores.shape, syn, len(syn), seed=seed)
    return {"synapse": syn, "control": ctrl}


@torch.no_grad()
def attention_last_row(lm, prompt: str) -> torch.Tensor:
    """Attention probabilities of the last query position, ``[n_layers, n_heads, T]`` (batch 1)."""
    from kqlib.core.attention import capture_attention

    ids = lm.encode(prompt)
    with capture_attention(lm) as probs:
        lm.model(ids, use_cache=False, logits_to_keep=1)
    return torch.stack([probs[l][0, :, -1, :].double() for l in range(lm.n_layers)])


def mass_matched_non_synapses(row: torch.Tensor, synapses, seed: int = 0, k: int = 5) -> set[tuple[int, int, int]]:
    """A control set with the synapses' attention MASS: for each synapse (largest attention first), one
    non-synapse entry drawn uniformly among the ``k`` unused entries whose attention probability is closest to
    the synapse's. ``row``: ``[L, H, T]`` last-row attention (:func:`attention_last_row`).

    The random control (:func:`kqlib.core.attention.random_non_synapses`) mostly draws near-zero entries, so
    scaling it moves little attention; this control moves about as much attention as the synapses do, so a
    remaining gap is about *which* entries are scaled, not how much attention is removed."""
    rng = random.Random(seed)
    syn = sorted({tuple(int(v) for v in e) for e in synapses}, key=lambda e: (-float(row[e]), e))
    flat = row.reshape(-1)
    L, H, T = row.shape
    excluded = {l * H * T + h * T + t for l, h, t in syn}
    order = torch.argsort(flat).tolist()
    free = [i for i in order if i not in excluded]
    free_vals = [float(flat[i]) for i in free]
    used: set[int] = set()
    out = set()
    import bisect

    for e in syn:
        a = float(row[e])
        pos = bisect.bisect_left(free_vals, a)
        lo, hi, cand = pos - 1, pos, []
        while len(cand) < k and (lo >= 0 or hi < len(free)):
            d_lo = a - free_vals[lo] if lo >= 0 else math.inf
            d_hi = free_vals[hi] - a if hi < len(free) else math.inf
            if d_lo <= d_hi:
                if free[lo] not in used:
                    cand.append(free[lo])
                lo -= 1
            else:
                if free[hi] not in used:
                    cand.append(free[hi])
                hi += 1
        if not cand:
            break
        pick = rng.choice(cand)
        used.add(pick)
        out.add((pick // (H * T), (pick // T) % H, pick % T))
    return out


@torch.no_grad()
def kn_forward(lm, prompt: str, target_id: int, neurons: Sequence[tuple[int, int]], *,
               entries: Iterable[tuple[int, int, int]] = (), alpha: float = 1.0, site: str = "post",
               renormalize: bool = False) -> tuple[torch.Tensor, float, int]:
    """One forward pass of ``prompt`` with the attention ``entries`` ((layer, head, key_pos) at the last query
    position) scaled by ``alpha`` (none: no attention hook at all).

    Returns ``(activations of neurons at the last position [len(neurons)] float64 in the given order,
    p(target), top-1 token)``.
    """
    neurons = [(int(l), int(i)) for l, i in neurons]
    entries = synapse_entries(entries)
    layers = sorted({l for l, _ in neurons})
    ids = lm.encode(prompt)
    with capture(lm, site=site, layers=layers, position=-1) as acts:
        if entries:
            with scale_attention(lm, entries, alpha, renormalize=renormalize):
                logits = lm.model(ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        else:
            logits = lm.model(ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
    vals = torch.tensor([float(acts[l][0, i]) for l, i in neurons], dtype=torch.float64)
    return vals, float(torch.softmax(logits, -1)[int(target_id)]), int(logits.argmax())


def delta_activation(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """``(ΔAct, shift)`` of the module docstring: Σ sign(a)(a' − a) / Σ|a| and ‖a' − a‖ / ‖a‖ (NaN, NaN when
    there are no neurons or all of ``before`` is 0)."""
    a, b = before.double(), after.double()
    denom = float(a.abs().sum())
    if a.numel() == 0 or denom == 0.0:
        return math.nan, math.nan
    d_act = float((torch.sign(a) * (b - a)).sum()) / denom
    shift = float(torch.linalg.vector_norm(b - a)) / float(torch.linalg.vector_norm(a))
    return d_act, shift


def run_synapse_experiment(lm, queries: Sequence, kn_sets: Sequence[Iterable[tuple[int, int]]], *, t: float = 0.2,
                           alphas: Sequence[float] = (0.0, 2.0), steps: int = 20, seed: int = 0,
                           site: str = "post", renormalize: bool = False, meta: Sequence[dict] | None = None,
                           cache: AttributionCache | str | None = None, use_cache: bool = True,
                           matched: bool = False) -> pd.DataFrame:
    """Scale each query's knowledge synapses (and, as a control, as many random non-synapses) by every α.
    ``matched``: also scale the attention-mass-matched control (set ``"matched"``,
    :func:`mass_matched_non_synapses`); every row then carries ``mass``, the summed attention probability of
    the scaled entries (NaN without ``matched``).

    ``queries``: ``(prompt, target_id)`` pairs or objects with ``.prompt`` and ``.target_id``; ``kn_sets[i]``:
    the knowledge neurons {(layer, neuron)} of query i; ``meta[i]``: extra columns for its rows.

    One row per (query, set ∈ {synapse, control}, α): query (index), set, alpha, n_entries (attention entries
    scaled), n_kns, act_before (Σ|a_n|), act_after (Σ|a'_n|), d_act, act_shift, p_before, p_after, d_prob,
    flipped, note (why d_act / d_prob is NaN, else ""). Cost per query: one attention attribution (cached)
    plus 1 + 2·len(alphas) forward passes.
    """
    queries = list(queries)
    kn_sets = [sorted((int(l), int(i)) for l, i in s) for s in kn_sets]
    if len(kn_sets) != len(queries):
        raise ParameterError(f"got {len(queries)} queries but {len(kn_sets)} KN sets")
    if meta is not None and len(meta) != len(queries):
        raise ParameterError(f"got {len(queries)} queries but {len(meta)} meta rows")
    if not 0.0 <= t <= 1.0:
        raise ParameterError(f"synapse threshold t must be in [0, 1], got {t}")
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ParameterError("give at least one scaling factor alpha")
    rows = []
    for n, (q, kns) in enumerate(zip(queries, kn_sets)):
        prompt, target = _prompt_target(q)
        scores = synapse_scores(lm, prompt, target, steps=steps, cache=cache, use_cache=use_cache)
        sets = synapse_sets(scores, t, query_seed(seed, prompt, target))
        row = None
        if matched:
            row = attention_last_row(lm, prompt)
            sets[MATCHED] = mass_matched_non_synapses(row, sets["synapse"], query_seed(seed, prompt, target))
        a0, p0, top0 = kn_forward(lm, prompt, target, kns, site=site)
        act0 = float(a0.abs().sum())
        for name in SETS + ((MATCHED,) if matched else ()):
            entries = sets[name]
            for alpha in alphas:
                note = ""
                if entries:
                    a1, p1, top1 = kn_forward(lm, prompt, target, kns, entries=entries, alpha=alpha, site=site,
                                              renormalize=renormalize)
                else:
                    a1, p1, top1 = a0, p0, top0
                    note = "no knowledge synapse (no positive attention score)"
                d_act, shift = delta_activation(a0, a1)
                if not entries:
                    d_act = shift = math.nan
                elif not kns:
                    note = "the query has no knowledge neurons"
                elif math.isnan(d_act):
                    note = "all knowledge-neuron activations are 0"
                if alpha < 1:
                    flipped = top0 == target and top1 != target
                elif alpha > 1:
                    flipped = top0 != target and top1 == target
                else:
                    flipped = top0 != top1
                rows.append({**(meta[n] if meta else {}), "query": n, "set": name, "alpha": alpha,
                             "n_entries": len(entries), "n_kns": len(kns), "act_before": act0,
                             "mass": float(sum(float(row[e]) for e in entries)) if row is not None else math.nan,
                             "act_after": float(a1.abs().sum()), "d_act": d_act, "act_shift": shift,
                             "p_before": p0, "p_after": p1,
                             "d_prob": (p1 - p0) / p0 if p0 > 0 and entries else math.nan,
                             "flipped": bool(flipped), "note": note})
    return pd.DataFrame(rows)


def activation_states(lm, prompt: str, target_id: int, neurons: Sequence[tuple[int, int]], *, t: float = 0.2,
                      alpha: float = 0.0, steps: int = 20, seed: int = 0, site: str = "post",
                      renormalize: bool = False, cache=None) -> pd.DataFrame:
    """The query's KN activations in three states, for a heatmap: ``before`` (no intervention), ``synapses``
    (its knowledge synapses scaled by ``alpha``) and ``control`` (as many random non-synapses scaled).

    Tidy: one row per (state, neuron) with layer, neuron, label ``"L{layer}.{neuron}"``, activation, p_answer.
    """
    neurons = sorted((int(l), int(i)) for l, i in neurons)
    scores = synapse_scores(lm, prompt, target_id, steps=steps, cache=cache)
    sets = synapse_sets(scores, t, query_seed(seed, prompt, target_id))
    states = {"before": ((), 1.0), "synapses": (sets["synapse"], alpha), "control": (sets["control"], alpha)}
    rows = []
    for state, (entries, a) in states.items():
        vals, p, _ = kn_forward(lm, prompt, target_id, neurons, entries=entries, alpha=a, site=site,
                                renormalize=renormalize)
        for (layer, idx), v in zip(neurons, vals.tolist()):
            rows.append({"state": state, "layer": layer, "neuron": idx, "label": f"L{layer}.{idx}",
                         "activation": v, "p_answer": p})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------- chapter 04 (Figure 5)

UNIT = ["model", "fact_id", "pattern_index"]


def choose_queries(ch, p) -> tuple[dict, dict, dict]:
    """Per model: a seeded sample of ``p.n_queries`` queries with knowledge neurons (method ``p.kn_method``),
    their KN sets and metadata (with the fact's K_C / K_I / K_none label at the static θ)."""
    import random
    import time

    from kqlib.paper.consistency import class_label_series as class_labels

    chosen, kn_sets, metas = {}, {}, {}
    data = ch.localize([p.kn_method], verbose=False)
    cs = data.consistency(p.cs_kind)
    labels = dict(zip(zip(cs.model, cs.fact_id), class_labels(cs, p.static_threshold, p.cs_kind)))
    for lm in ch.models():
        t0 = time.time()
        ds = data.datasets[lm.name]
        sets = data.locs[lm.name].sets(p.kn_method, model=lm.name)
        pool = [q for q in ds.queries if sets.get((q.fact_id, q.pattern_index))]
        if p.n_queries and len(pool) > p.n_queries:
            pool = sorted(random.Random(f"{p.seed}-{lm.name}").sample(pool, p.n_queries),
                          key=lambda q: (q.fact_id, q.pattern_index))
        chosen[lm.name] = pool
        kn_sets[lm.name] = [sets[(q.fact_id, q.pattern_index)] for q in pool]
        metas[lm.name] = [dict(model=lm.name, relation=q.relation, fact_id=q.fact_id, pattern_index=q.pattern_index,
                               prompt=q.prompt, group=labels.get((lm.name, q.fact_id))) for q in pool]
        print(f"{lm.name}: {len(pool)} of {len(ds.queries)} queries chosen ({time.time() - t0:.0f} s)")
    return chosen, kn_sets, metas


def run_chapter_synapses(lms, chosen, kn_sets, metas, p) -> pd.DataFrame:
    import time

    frames = []
    for lm in lms:
        t0 = time.time()
        frames.append(run_synapse_experiment(
            lm, chosen[lm.name], kn_sets[lm.name], t=p.synapse_t, alphas=[float(a) for a in p.alphas],
            steps=p.steps, seed=p.seed, site=p.site, renormalize=p.renormalize, meta=metas[lm.name],
            matched=bool(p.mass_matched)))
        print(f"{lm.name}: {len(chosen[lm.name])} queries in {time.time() - t0:.0f} s")
    syn = pd.concat(frames, ignore_index=True)
    syn["abs_d_act"] = syn.d_act.abs()
    syn["abs_d_prob"] = syn.d_prob.abs()
    return syn


def per_model_overview(syn: pd.DataFrame) -> pd.DataFrame:
    return (syn[syn["set"] == "synapse"].drop_duplicates(UNIT)
            .groupby("model").agg(queries=("query", "size"), facts=("fact_id", "nunique"),
                                  synapses_per_query=("n_entries", "mean"), kns_per_query=("n_kns", "mean"),
                                  mean_p_answer=("p_before", "mean"))
            .round(2))


def heatmap(lm, syn: pd.DataFrame, chosen, kn_sets, p):
    """Figure 5 (left): the KN activations of the query whose KNs lose the most activation at the smallest α,
    before, after scaling its synapses and after scaling the control. Returns (fig or None, info or None)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    alpha = min(float(a) for a in p.alphas)
    cand = syn[(syn.model == lm.name) & (syn["set"] == "synapse") & (syn.alpha == alpha)].dropna(subset=["d_act"])
    if not len(cand):
        return None, None
    pick = cand.sort_values(["d_act", "fact_id", "pattern_index"]).iloc[0]
    q = chosen[lm.name][int(pick.query)]
    kns = kn_sets[lm.name][int(pick.query)]
    states = activation_states(lm, q.prompt, q.target_id, kns, t=p.synapse_t, alpha=alpha, steps=p.steps,
                               seed=p.seed, site=p.site, renormalize=p.renormalize)
    before = states[states.state == "before"].set_index("label").activation
    keep = before.abs().sort_values(ascending=False).index[:40]
    order = states[states.label.isin(keep)].drop_duplicates("label").sort_values(["layer", "neuron"]).label
    mat = states.pivot(index="state", columns="label", values="activation").loc[
        ["before", "synapses", "control"], list(order)]
    mat.index = ["before", f"synapses × {alpha:g}", f"control × {alpha:g}"]
    lim = float(np.abs(mat.to_numpy()).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * mat.shape[1] + 2), 3))
    sns.heatmap(mat, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, ax=ax,
                cbar_kws={"label": "activation at the last position"})
    ax.set_xlabel("knowledge neuron (layer.index)")
    ax.set_ylabel("")
    ax.set_title(f"{lm.name}: “{q.prompt} …” → {q.obj}", fontsize=10)
    p_states = states.drop_duplicates("state").set_index("state").p_answer
    info = dict(prompt=q.prompt, answer=q.obj, n_kns=len(kns), d_act=float(pick.d_act),
                n_synapses=int(pick.n_entries), p_before=float(p_states["before"]),
                p_synapses=float(p_states["synapses"]), p_control=float(p_states["control"]))
    return fig, info


def mass_table(syn: pd.DataFrame) -> pd.DataFrame:
    """Mean entries and attention mass scaled per model and set (one row per query counted once)."""
    part = syn[syn.alpha == syn.alpha.min()]
    return (part.groupby(["model", "set"]).agg(queries=("query", "size"), entries=("n_entries", "mean"),
                                               attention_mass=("mass", "mean")).round(3))


def distribution_figure(syn: pd.DataFrame, models):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.8 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        part = syn[syn.model == model].assign(alpha=lambda d: d.alpha.map(lambda a: f"α = {a:g}"))
        sets = [s for s in SETS + (MATCHED,) if s in set(part["set"])]
        for ax, col, label in ((axes[row, 0], "d_act", "ΔAct (KN activations)"),
                               (axes[row, 1], "d_prob", "ΔProb (answer)")):
            data = part.dropna(subset=[col])
            if len(data):
                sns.boxplot(data=data, x="alpha", y=col, hue="set", hue_order=sets, ax=ax,
                            showfliers=False, palette="Set2")
                sns.stripplot(data=data, x="alpha", y=col, hue="set", hue_order=sets, ax=ax,
                              dodge=True, size=3, palette="dark:#333", legend=False)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_title(f"{model}: {label}")
            ax.set_xlabel("")
            ax.set_ylabel(label)
            if col == "d_prob" and len(data) and data[col].max() > 5:
                ax.set_yscale("symlog", linthresh=1)
    fig.tight_layout()
    return fig


MEASURES = ("d_act", "abs_d_act", "d_prob", "abs_d_prob", "act_shift")


def summary_table(syn: pd.DataFrame, p) -> pd.DataFrame:
    """Mean of every measure per (model, α, set), pooled over queries, 95 % cluster-bootstrap CI over facts
    (n = facts, n_rows = queries), and the flip rate."""
    from kqlib.paper.stats import mean_ci_cluster_table

    summary = pd.concat([mean_ci_cluster_table(syn, ["model", "alpha", "set"], m, cluster=["fact_id"],
                                               n_boot=p.n_boot, seed=p.seed).assign(measure=m) for m in MEASURES],
                        ignore_index=True)
    flips = syn.groupby(["model", "alpha", "set"])["flipped"].mean().rename("flip_rate").reset_index()
    return summary.merge(flips, how="left", on=["model", "alpha", "set"])


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    cell = summary.apply(lambda r: "–" if not np.isfinite(r["mean"]) else
                         f"{r['mean']:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", axis=1)
    return summary.assign(cell=cell).pivot_table(index=["model", "alpha", "set"], columns="measure", values="cell",
                                                 aggfunc="first")[list(MEASURES)]


def fact_tests(syn: pd.DataFrame, p) -> pd.DataFrame:
    """Wilcoxon synapse vs control on |ΔAct| and |ΔProb|, the FACT as the unit (per-fact means first); ``diff``
    = mean over facts of |effect|(synapses) − |effect|(control) with a bootstrap CI over facts."""
    from kqlib.paper.stats import paired_fact_table

    pairs = [("synapse", "control")] + ([("synapse", MATCHED)] if MATCHED in set(syn["set"]) else [])
    return pd.concat([paired_fact_table(syn, cluster=["fact_id"], column="set", pairs=pairs,
                                        value=v, by=["model", "alpha"], n_boot=p.n_boot, seed=p.seed)
                      .assign(measure=v) for v in ("abs_d_act", "abs_d_prob")], ignore_index=True)


def synapse_numbers(ch, syn: pd.DataFrame, summary: pd.DataFrame, tests: pd.DataFrame, heat_info) -> dict:
    """Chapter 04's headline numbers (first model) and its claims (every model)."""
    from kqlib.paper.stats import finite_or_none, fmt

    p, lms = ch.p, ch.models()
    alphas = [float(a) for a in p.alphas]
    a_sup = min(alphas) if min(alphas) < 1 else None
    a_enh = max(alphas) if max(alphas) > 1 else None
    lm0 = lms[0].name
    Sm = summary.set_index(["model", "alpha", "set", "measure"])
    Tt = tests[tests.b == "control"].set_index(["model", "alpha", "measure"])
    Tm = tests[tests.b == MATCHED].set_index(["model", "alpha", "measure"])
    notes: dict[str, str] = {}
    nums: dict = {"n_models": len(lms), "model0": lm0, "kn_method": p.kn_method, "synapse_t": float(p.synapse_t)}
    part0 = syn[syn.model == lm0]
    nums["n_queries"] = int(part0[UNIT].drop_duplicates().shape[0])
    nums["n_facts"] = int(part0.fact_id.nunique())
    nums["synapses_per_query"] = finite_or_none(part0[part0["set"] == "synapse"].drop_duplicates(UNIT).n_entries.mean())
    nums["kns_per_query"] = finite_or_none(part0.drop_duplicates(UNIT).n_kns.mean())
    for tag, a in (("sup", a_sup), ("enh", a_enh)):
        nums[f"alpha_{tag}"] = a
        for measure, short in (("d_act", "act"), ("d_prob", "prob"), ("abs_d_act", "absact"),
                               ("abs_d_prob", "absprob")):
            for s, sshort in (("synapse", "syn"), ("control", "ctrl")):
                key = f"{short}_{sshort}_{tag}"
                if a is None or (lm0, a, s, measure) not in Sm.index:
                    nums[key], nums[f"{key}_ci"] = None, [None, None]
                    notes[key] = f"no α {'< 1' if tag == 'sup' else '> 1'} in alphas" if a is None else "no rows"
                    continue
                r = Sm.loc[(lm0, a, s, measure)]
                nums[key] = finite_or_none(r["mean"])
                nums[f"{key}_ci"] = [finite_or_none(r.ci_low), finite_or_none(r.ci_high)]
                if nums[key] is None:
                    notes[key] = "no query with a defined value"
        for measure, short in (("d_act", "act"), ("d_prob", "prob")):
            pkey, tkey = f"p_{short}_{tag}", (lm0, a, f"abs_{measure}")
            nums[pkey] = finite_or_none(Tt.loc[tkey, "p"]) if a is not None and tkey in Tt.index else None
            if nums[pkey] is None:
                notes[pkey] = Tt.loc[tkey, "note"] if a is not None and tkey in Tt.index else "no such α"
        flip = syn[(syn.model == lm0) & (syn.alpha == a) & (syn["set"] == "synapse")].flipped if a is not None else []
        nums[f"flip_syn_{tag}"] = finite_or_none(np.mean(flip)) if len(flip) else None
    nums["heat_prompt"] = heat_info["prompt"] if heat_info else None
    nums["heat_d_act"] = heat_info["d_act"] if heat_info else None
    for k in [k for k in list(nums) if k.startswith(("act_", "prob_", "absact_", "absprob_", "p_", "flip_",
                                                     "heat_d_act")) and not k.endswith("_ci")]:
        spec = ".1e" if k.startswith("p_") else (".0%" if k.startswith("flip_") else "+.3f")
        nums[f"{k}_text"] = fmt(nums[k], ".3f" if k.startswith("abs") else spec)
    nums["alpha_sup_text"] = fmt(a_sup, "g", "none")
    nums["alpha_enh_text"] = fmt(a_enh, "g", "none")
    nums["notes"] = notes
    for lm in lms:
        for claim_id, a, measure in (("synapse_act_suppress", a_sup, "abs_d_act"),
                                     ("synapse_prob_suppress", a_sup, "abs_d_prob"),
                                     ("synapse_act_enhance", a_enh, "abs_d_act"),
                                     ("synapse_prob_enhance", a_enh, "abs_d_prob")):
            key = (lm.name, a, measure)
            if a is None or key not in Tt.index or Tt.loc[key, "n"] == 0:
                ch.claim(claim_id, lm.name, why_not="no such α in alphas" if a is None else "no paired facts")
                continue
            r = Tt.loc[key]
            ch.claim(claim_id, lm.name, r["diff"], r.diff_low, r.diff_high, int(r.n), p=finite_or_none(r.p),
                     detail=f"α = {a:g}: mean |{measure[4:]}| synapses {r.mean_a:.3f} vs control {r.mean_b:.3f}")
        key = (lm.name, a_sup, "abs_d_act")
        if a_sup is None or key not in Tm.index or Tm.loc[key, "n"] == 0:
            ch.claim("synapse_act_suppress_mass_matched", lm.name,
                     why_not="no suppressing α" if a_sup is None else
                     "the mass-matched control was not run (mass_matched = False)" if not p.mass_matched else
                     "no paired facts")
        else:
            r = Tm.loc[key]
            mass = syn[(syn.model == lm.name) & (syn.alpha == a_sup)].groupby("set").mass.mean()
            ch.claim("synapse_act_suppress_mass_matched", lm.name, r["diff"], r.diff_low, r.diff_high, int(r.n),
                     p=finite_or_none(r.p),
                     detail=f"α = {a_sup:g}: mean |d_act| synapses {r.mean_a:.3f} vs matched {r.mean_b:.3f}; "
                            f"attention mass scaled {mass.get('synapse', np.nan):.3f} vs "
                            f"{mass.get(MATCHED, np.nan):.3f}")
    for s_, short in (("control", "ctrl"), (MATCHED, "matched")):
        m = part0[(part0["set"] == s_) & (part0.alpha == (a_sup if a_sup is not None else part0.alpha.min()))].mass
        nums[f"mass_{short}"] = finite_or_none(m.mean()) if len(m) else None
    m = part0[(part0["set"] == "synapse") & (part0.alpha == part0.alpha.min())].mass
    nums["mass_syn"] = finite_or_none(m.mean()) if len(m) else None
    for k in ("mass_syn", "mass_ctrl", "mass_matched"):
        nums[k + "_text"] = fmt(nums[k], ".3f", "not run")
    key = (lm0, a_sup, "abs_d_act")
    skey = (lm0, a_sup, MATCHED, "abs_d_act")
    nums["absact_matched_sup"] = finite_or_none(Sm.loc[skey, "mean"]) if skey in Sm.index else None
    nums["p_act_matched_sup"] = finite_or_none(Tm.loc[key, "p"]) if key in Tm.index else None
    nums["absact_matched_sup_text"] = fmt(nums["absact_matched_sup"], ".3f", "not run")
    nums["p_act_matched_sup_text"] = fmt(nums["p_act_matched_sup"], ".1e", "undefined")
    return nums


def mean_ci_cluster_by_group(syn: pd.DataFrame, p) -> pd.DataFrame:
    """ΔAct per (model, α, set, K_C / K_I group), CI over facts."""
    from kqlib.paper.stats import mean_ci_cluster_table

    return mean_ci_cluster_table(syn, ["model", "alpha", "set", "group"], "d_act", cluster=["fact_id"],
                                 n_boot=p.n_boot, seed=p.seed)
