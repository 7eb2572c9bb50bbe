"""Chapter 00 (setup): the models, and what they answer on a few hand-written facts.

The notebook ``book/00_setup.py`` imports this module and :class:`~kqlib.book.chapter.Chapter` only.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import matplotlib.pyplot as plt  # heavy, but every chapter module draws
import pandas as pd
import seaborn as sns
import torch

#: Hand-written facts of the setup chapter: (prompt, answer).
SETUP_FACTS = [
    ("The capital of France is", "Paris"),
    ("Paris is the capital of", "France"),
    ("The capital of Japan is", "Tokyo"),
    ("The native language of Jean Rouaud is", "French"),
    ("The Eiffel Tower is located in the city of", "Paris"),
]


def fact_probabilities(lms: Sequence, facts: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Next-token probability and rank of each fact's answer (its first token) for each model
    (:meth:`kqlib.LM.answer_probabilities`)."""
    facts = list(facts)
    rows = []
    for lm in lms:
        prompts = [prompt for prompt, _ in facts]
        a = lm.answer_probabilities(prompts, [lm.answer_token_ids(prompt, answer)[0] for prompt, answer in facts])
        for (prompt, answer), p, rank, top in zip(facts, a["p"].tolist(), a["rank"].tolist(), a["top1"].tolist()):
            rows.append({"model": lm.name, "prompt": prompt, "answer": answer, "p(answer)": p, "rank": rank,
                         "top-1": lm.tokenizer.decode([top])})
    return pd.DataFrame(rows)


def fact_probability_figure(probs):
    """Bar chart of p(answer) per prompt and model (the frame of :func:`fact_probabilities`)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(data=probs, y="prompt", x="p(answer)", hue="model", ax=ax)
    ax.set_xlim(0, 1)
    ax.set_xlabel("next-token probability of the answer's first token")
    ax.set_ylabel("")
    ax.set_title("Hand-written facts")
    fig.tight_layout()
    return fig


def setup_numbers(probs, n_models: int) -> dict[str, Any]:
    france = probs[probs.prompt == "The capital of France is"]
    return {"n_models": n_models, "p_paris": float(france["p(answer)"].iloc[0]),
            "mean_p_answer": float(probs["p(answer)"].mean()), "top1_accuracy": float((probs["rank"] == 1).mean()),
            "n_facts": int(probs[["prompt", "answer"]].drop_duplicates().shape[0])}
