"""Dynamic KN selection (paper §4.2): does attention select the knowledge neurons a query uses?

For a query q = (prompt x, answer token o) with knowledge neurons N_q (its KN set from :func:`kqlib.paper.localization.localize`):

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

import bisect
import contextlib
import math
import random
import zlib
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from kqlib.attribution import AttributionConfig, knowledge_synapses
from kqlib.attribution.config import SYNAPSE_METHOD
from kqlib.core.attention import capture_attention, random_non_synapses, scale_attention, synapse_entries
from kqlib.core.hooks import capture
from kqlib.errors import ParameterError
from kqlib.runs.cache import AttributionCache
from kqlib.runs.many import attribute_many
from kqlib.runs.queries import query_prompt_target

SETS = ("synapse", "control")
MATCHED = "matched"  # the attention-mass-matched control (``run_synapse_experiment(..., matched=True)``)


def _prompt_target(q) -> tuple[str, int]:
    """The one query normaliser (:func:`kqlib.runs.queries.query_prompt_target`), with an integer target id."""
    prompt, target = query_prompt_target(q)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) and not (
            torch.is_tensor(target) and target.numel() == 1):
        raise ParameterError(f"synapse queries need an integer target id, got {target!r} for {prompt!r}")
    return prompt, int(target)


def synapse_scores(lm, prompt: str, target_id: int, *, steps: int = 20, cache: AttributionCache | str | None = None,
                   use_cache: bool = True) -> torch.Tensor:
    """:func:`kqlib.attribution.attribute_attention` scores ``[L, H, T]``, through the one cached attribution path
    (:func:`kqlib.attribute_many` with an ``attention-ig`` :class:`~kqlib.attribution.AttributionConfig`)."""
    config = AttributionConfig(method=SYNAPSE_METHOD, steps=steps)
    return attribute_many(lm, [(prompt, int(target_id))], config, cache=cache, use_cache=use_cache, progress=False)[0]


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
    with capture(lm, site=site, layers=layers, position=-1) as acts:
        with scale_attention(lm, entries, alpha, renormalize=renormalize) if entries else contextlib.nullcontext():
            a = lm.answer_probabilities([prompt], [int(target_id)])
    vals = torch.tensor([float(acts[l][0, i]) for l, i in neurons], dtype=torch.float64)
    return vals, float(a["p"][0]), int(a["top1"][0])


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
