"""Knowledge editing through knowledge-neuron value vectors, and the editing metrics (paper §2.5, §2.6).

A neuron (l, i)'s value vector v = ``lm.value_vector(l, i)`` (``[d_model]``, the slice of the MLP output
projection it writes with; GPT-2's Conv1D row or a Linear's column, handled by the LM).

* erase:  v ← 0                                              (Dai et al. 2022)
* update: v ← v − λ1'·e(o) + λ2'·e(o'),  λ1' = λ1‖v‖/‖e(o)‖,  λ2' = λ2‖v‖/‖e(o')‖  (Dai et al.: λ1=1, λ2=8)
  with e(·) the raw input-embedding row of the old answer o / new answer o' (first token).

Both are context managers: they modify the weights in place on entry and restore the touched slices
bit-exactly on exit, also after an exception::

    with erase_neurons(lm, kns):
        lm.next_token_logits(prompt)
    result = evaluate_edit(lm, lambda: erase_neurons(lm, kns), edited, neighbors, unrelated)

Metrics (queries are ``(prompt, target_id)`` pairs; top-1 = argmax of the next-token logits):

* erase  — Rel = mean_{q∈edited}[top1'(q) ≠ o_q];  Gen = the same over neighbor queries
* update — Rel = mean_{q∈edited}[top1'(q) = o'];    Gen = the same over neighbor queries
* Loc = mean_{q∈unrelated}[top1'(q) = top1(q)]  (unchanged prediction);  Avg = (Rel + Gen + Loc) / 3
* ΔPPL = PPL_after − PPL_before on held-out texts, PPL = exp(Σ NLL / Σ tokens)
* ΔProb = mean_{q∈edited} (P'(o_q) − P(o_q)) / P(o_q)  (auxiliary; ' = inside the edit)
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator, Sequence

import torch

from kqlib.runs.queries import query_prompt_target
from kqlib.errors import ParameterError

DEFAULT_PPL_TEXTS: tuple[str, ...] = (
    "The library opens at nine in the morning and closes at six in the evening.",
    "She poured a cup of tea and sat down by the window to read the newspaper.",
    "Rain is expected in the afternoon, so it is a good idea to carry an umbrella.",
    "The children walked to school along the river, talking about their weekend plans.",
    "A small bakery on the corner sells fresh bread, cakes and coffee every day.",
    "He wrote a short letter to his grandmother and posted it on the way to work.",
    "The train was delayed by twenty minutes because of repairs on the line.",
    "Most plants need sunlight, water and good soil in order to grow well.",
    "After dinner, the family played a board game and listened to some music.",
    "The meeting was moved to Thursday so that everyone on the team could attend.",
    "Cats often sleep for many hours during the day and become active at night.",
    "The museum has a large collection of old maps, coins and paintings.",
)

Neuron = tuple[int, int]
Query = tuple[str, int]


# ------------------------------------------------------------------------------- weight edits


def _check_neurons(lm, neurons: Iterable[Neuron]) -> list[Neuron]:
    """Unique (layer, neuron) pairs in first-seen order; ParameterError when out of range."""
    seen: dict[Neuron, None] = {}
    for pair in neurons:
        try:
            layer, idx = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise ParameterError(f"neurons must be (layer, index) pairs, got {pair!r}") from None
        if not (0 <= layer < lm.n_layers and 0 <= idx < lm.n_neurons):
            raise ParameterError(
                f"neuron ({layer}, {idx}) is out of range: the model has {lm.n_layers} layers x {lm.n_neurons} neurons"
            )
        seen[(layer, idx)] = None
    return list(seen)


@contextlib.contextmanager
def modify_value_vectors(lm, neurons: Iterable[Neuron], new_vector: Callable[[int, int, torch.Tensor], torch.Tensor]
                         ) -> Iterator[list[Neuron]]:
    """Set each value vector v of ``neurons`` to ``new_vector(layer, neuron, v_original)`` (``[d_model]``) for the
    duration of the block; yields the unique neurons. Copies of exactly the touched slices are taken before any
    change (so new values never depend on earlier edits) and copied back under ``torch.no_grad()`` on exit."""
    targets = _check_neurons(lm, neurons)
    saved: list[tuple[Neuron, torch.Tensor]] = []
    try:
        with torch.no_grad():
            saved = [((l, i), lm.value_vector(l, i).detach().clone()) for l, i in targets]
            new = [new_vector(l, i, orig) for (l, i), orig in saved]
            for ((l, i), orig), value in zip(saved, new):
                lm.value_vector(l, i).copy_(value.to(device=orig.device, dtype=orig.dtype))
        yield targets
    finally:
        with torch.no_grad():
            for (l, i), orig in saved:
                lm.value_vector(l, i).copy_(orig)


def erase_neurons(lm, neurons: Iterable[Neuron]):
    """Context manager: value vectors of ``neurons`` set to zero (v ← 0), restored bit-exactly on exit."""
    return modify_value_vectors(lm, neurons, lambda l, i, v: torch.zeros_like(v))


def _first_token(token_id, what: str) -> int:
    if isinstance(token_id, torch.Tensor):
        token_id = token_id.reshape(-1).tolist()
    if isinstance(token_id, (list, tuple)):
        if not token_id:
            raise ParameterError(f"{what} is an empty token list")
        token_id = token_id[0]
    try:
        return int(token_id)
    except (TypeError, ValueError):
        raise ParameterError(f"{what} must be a token id (int) or a list of ids, got {token_id!r}") from None


def _embedding_row(lm, token_id: int, what: str) -> torch.Tensor:
    weight = lm.model.get_input_embeddings().weight
    if not 0 <= token_id < weight.shape[0]:
        raise ParameterError(f"{what} {token_id} is outside the vocabulary (size {weight.shape[0]})")
    row = weight[token_id].detach().clone().to(torch.float32)
    return row


def update_neurons(lm, neurons: Iterable[Neuron], old_answer_id, new_answer_id, lambda1: float = 1.0,
                   lambda2: float = 8.0):
    """Context manager: Dai et al.'s update v ← v − λ1'·e(o) + λ2'·e(o') for each neuron, restored on exit.

    λ1' = λ1‖v‖/‖e(o)‖, λ2' = λ2‖v‖/‖e(o')‖ (a zero embedding contributes nothing); e = rows of
    ``lm.model.get_input_embeddings().weight`` (unscaled; first token when a list of ids is given), computed in
    float32 and cast to the weights' dtype. λ1 = λ2 = 0 leaves the weights bit-identical. Embeddings (tied or
    not) are only read.
    """
    old_id = _first_token(old_answer_id, "old_answer_id")
    new_id = _first_token(new_answer_id, "new_answer_id")
    e_old = _embedding_row(lm, old_id, "old_answer_id")
    e_new = _embedding_row(lm, new_id, "new_answer_id")
    d_model = lm.value_vector(0, 0).shape[0]
    if e_old.shape[0] != d_model:
        raise ParameterError(
            f"input embeddings have width {e_old.shape[0]} but value vectors {d_model} (e.g. OPT with a projected "
            "embedding): the update rule needs e(o) in the residual space"
        )
    n_old, n_new = float(e_old.norm()), float(e_new.norm())

    def new_vector(layer: int, neuron: int, v: torch.Tensor) -> torch.Tensor:
        v32 = v.to(torch.float32)
        e_o, e_n = e_old.to(v.device), e_new.to(v.device)
        norm_v = float(v32.norm())
        l1 = lambda1 * norm_v / n_old if n_old > 0 else 0.0
        l2 = lambda2 * norm_v / n_new if n_new > 0 else 0.0
        if l1 == 0.0 and l2 == 0.0:
            return v.clone()
        return v32 - l1 * e_o + l2 * e_n

    return modify_value_vectors(lm, neurons, new_vector)


# ------------------------------------------------------------------------------------ metrics


@torch.no_grad()
def perplexity(lm, texts: Sequence[str] = DEFAULT_PPL_TEXTS) -> float:
    """PPL = exp(Σ_texts Σ_t NLL_t / Σ_texts (T − 1)): token-weighted mean next-token NLL, one text per
    forward (``labels=ids``). Texts of a single token are skipped."""
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = lm.encode(text)
        n = ids.shape[1] - 1
        if n < 1:
            continue
        out = lm.model(ids, labels=ids, use_cache=False)
        total_nll += float(out.loss) * n
        total_tokens += n
    if total_tokens == 0:
        raise ParameterError("perplexity needs at least one text of two or more tokens")
    mean_nll = total_nll / total_tokens
    return math.exp(mean_nll) if mean_nll < 700 else math.inf  # exp overflows float64 beyond ~709


def _check_queries(queries, what: str) -> list[Query]:
    """``(prompt, target id)`` pairs through the one query normaliser (:func:`kqlib.runs.queries.query_prompt_target`),
    with the target reduced to its first token id."""
    out = []
    for q in queries or []:
        try:
            prompt, target = query_prompt_target(q)
        except ParameterError as exc:
            raise ParameterError(f"{what}: {exc}") from None
        out.append((prompt, _first_token(target, f"{what} target_id")))
    return out


@torch.no_grad()
def predict(lm, queries: Sequence[Query], extra_id: int | None = None) -> dict[str, torch.Tensor]:
    """One forward per prompt (``logits_to_keep=1``): ``top1 [n]`` (argmax id), ``p_target [n]`` (softmax
    probability of each query's target) and, with ``extra_id``, ``p_extra [n]`` (probability of that token)."""
    queries = _check_queries(queries, "queries")
    a = lm.answer_probabilities([q for q, _ in queries], [t for _, t in queries], batch_size=1, extra_id=extra_id)
    out = {"top1": a["top1"].long(), "p_target": a["p"].double()}
    if extra_id is not None:
        out["p_extra"] = a["p_extra"].double()
    return out


def _predict_cached(lm, queries: list[Query], extra_id: int | None, cache: dict | None) -> dict[str, torch.Tensor]:
    """:func:`predict`, memoising each query's (top1, p_target, p_extra) in ``cache`` when given."""
    if cache is None:
        return predict(lm, queries, extra_id)
    keys = [("query", prompt, target, extra_id) for prompt, target in queries]
    missing = [(q, k) for q, k in zip(queries, keys) if k not in cache]
    if missing:
        res = predict(lm, [q for q, _ in missing], extra_id)
        for j, (_, key) in enumerate(missing):
            cache[key] = (int(res["top1"][j]), float(res["p_target"][j]),
                          float(res["p_extra"][j]) if extra_id is not None else math.nan)
    rows = [cache[k] for k in keys]
    out = {"top1": torch.tensor([r[0] for r in rows], dtype=torch.long),
           "p_target": torch.tensor([r[1] for r in rows], dtype=torch.float64)}
    if extra_id is not None:
        out["p_extra"] = torch.tensor([r[2] for r in rows], dtype=torch.float64)
    return out


def _mean(mask: torch.Tensor) -> float:
    return float(mask.double().mean()) if mask.numel() else math.nan


def _rel_change(after: torch.Tensor, before: torch.Tensor) -> float:
    """mean (after − before) / before over entries with before > 0 (NaN if none)."""
    ok = before > 0
    if not bool(ok.any()):
        return math.nan
    return float(((after[ok] - before[ok]) / before[ok]).mean())


def evaluate_edit(lm, edit_ctx_factory, edited: Sequence[Query], neighbors: Sequence[Query],
                  unrelated: Sequence[Query], ppl_texts: Sequence[str] | None = DEFAULT_PPL_TEXTS,
                  task: str = "erase", new_target_id=None, cache: dict | None = None) -> dict:
    """Measure an edit: predictions of the unedited model, then inside ``edit_ctx_factory()``.

    ``edit_ctx_factory``: zero-argument callable returning the edit's context manager (e.g.
    ``lambda: erase_neurons(lm, kns)``); a context manager object is accepted too (used once). Queries:
    ``(prompt, target_id)`` pairs (``target_id`` = the old answer o's first token). ``task``: "erase" or
    "update" (needs ``new_target_id`` = o'). ``ppl_texts=None`` skips ΔPPL. ``cache``: a dict reused across
    calls on the SAME unedited model, memoising its per-query predictions and PPL (e.g. the unrelated queries
    and held-out texts shared by every edited fact); never reuse it after the weights change.

    Returns a dict: task, rel, gen, loc, avg (see module docstring; [0, 1], NaN for an empty query list),
    rel_before / gen_before (the same criterion on the unedited model), ppl_before, ppl_after, dppl,
    dprob (ΔProb of o on the edited queries), dprob_neighbors, dprob_new (update: ΔProb of o' on the edited
    queries), n_edited, n_neighbors, n_unrelated.
    """
    if task not in ("erase", "update"):
        raise ParameterError(f"task must be 'erase' or 'update', got {task!r}")
    new_id = None
    if task == "update":
        if new_target_id is None:
            raise ParameterError("task='update' needs new_target_id (the new answer's token id)")
        new_id = _first_token(new_target_id, "new_target_id")
    edited = _check_queries(edited, "edited")
    neighbors = _check_queries(neighbors, "neighbors")
    unrelated = _check_queries(unrelated, "unrelated")
    if not edited:
        raise ParameterError("evaluate_edit needs at least one edited query")

    def measure(cache: dict | None) -> tuple[dict, dict, dict, float]:
        e = _predict_cached(lm, edited, new_id, cache)
        n = _predict_cached(lm, neighbors, new_id, cache)
        u = _predict_cached(lm, unrelated, None, cache)
        if not ppl_texts:
            return e, n, u, math.nan
        if cache is None:
            return e, n, u, perplexity(lm, ppl_texts)
        key = ("ppl", tuple(ppl_texts))
        if key not in cache:
            cache[key] = perplexity(lm, ppl_texts)
        return e, n, u, cache[key]

    before = measure(cache)
    is_cm_object = hasattr(edit_ctx_factory, "__enter__") and not isinstance(edit_ctx_factory, type)
    ctx = edit_ctx_factory if is_cm_object else edit_ctx_factory()
    with ctx:
        after = measure(None)
    (e0, n0, u0, ppl0), (e1, n1, u1, ppl1) = before, after

    def success(pred: dict, queries: list[Query]) -> torch.Tensor:
        if not queries:
            return torch.zeros(0, dtype=torch.bool)
        if task == "erase":
            return pred["top1"] != torch.tensor([t for _, t in queries])
        return pred["top1"] == new_id

    rel, gen = _mean(success(e1, edited)), _mean(success(n1, neighbors))
    loc = _mean(u1["top1"] == u0["top1"])
    result = dict(
        task=task, rel=rel, gen=gen, loc=loc, avg=(rel + gen + loc) / 3.0,
        rel_before=_mean(success(e0, edited)), gen_before=_mean(success(n0, neighbors)),
        ppl_before=ppl0, ppl_after=ppl1, dppl=ppl1 - ppl0,
        dprob=_rel_change(e1["p_target"], e0["p_target"]),
        dprob_neighbors=_rel_change(n1["p_target"], n0["p_target"]) if neighbors else math.nan,
        dprob_new=_rel_change(e1["p_extra"], e0["p_extra"]) if new_id is not None else math.nan,
        n_edited=len(edited), n_neighbors=len(neighbors), n_unrelated=len(unrelated),
    )
    return result
