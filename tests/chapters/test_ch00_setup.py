"""Chapter 00 (setup): the module's fact probabilities on two tiny random models, checked against the softmax of
their own next-token logits; its numbers on a hand-made frame whose answer is known; its bar chart.

The notebook itself runs through `kq run 00` in tests/book/test_book.py (fixture ``setup_book``)."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest
import torch

from kqlib.book.chapters import ch00_setup as K
from tiny import tiny_lm

matplotlib.use("Agg")

# in the tiny models' word vocabulary (tests/helpers/tiny.py); every answer is one token
FACTS = [("the capital of france is", "paris"), ("the native language of germany is", "german")]


@pytest.fixture(scope="module")
def lms():
    out = []
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        lm = tiny_lm("llama", seed=seed)
        lm.name = name
        out.append(lm)
    return out


@pytest.fixture()
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_fact_probabilities_are_each_models_softmax_of_the_answer(lms):
    probs = K.fact_probabilities(lms, iter(FACTS))  # any iterable of (prompt, answer)
    assert list(probs.columns) == ["model", "prompt", "answer", "p(answer)", "rank", "top-1"]
    # one row per (model, fact), model by model in the order given
    assert list(zip(probs.model, probs.prompt, probs.answer)) == [(lm.name, p, a) for lm in lms for p, a in FACTS]
    for lm in lms:
        mine = probs[probs.model == lm.name]
        for (prompt, answer), row in zip(FACTS, mine.itertuples(index=False)):
            logits = lm.next_token_logits(prompt).double()
            target = lm.tokenizer.convert_tokens_to_ids(answer)
            assert target == lm.answer_token_ids(prompt, answer)[0]  # the answer's own token, not <unk>
            assert row[3] == pytest.approx(torch.softmax(logits, -1)[target].item(), rel=1e-9)
            assert row[4] == 1 + int((logits > logits[target]).sum())
            assert row[5] == lm.tokenizer.decode([int(logits.argmax())])
    assert probs["p(answer)"].between(0, 1).all() and (probs["rank"] >= 1).all()
    # two random models: not the same numbers
    a, b = (probs[probs.model == lm.name]["p(answer)"].to_numpy() for lm in lms)
    assert not (a == b).all()


def test_fact_probabilities_of_no_model_or_no_fact_is_an_empty_frame(lms):
    assert K.fact_probabilities([], FACTS).empty
    assert K.fact_probabilities(lms, []).empty


def _frame():
    """Two models, the France fact and one other: ranks 1, 3 (model a), 1, 1 (model b)."""
    return pd.DataFrame([
        {"model": "a", "prompt": "The capital of France is", "answer": "Paris", "p(answer)": 0.8, "rank": 1},
        {"model": "a", "prompt": "The capital of Japan is", "answer": "Tokyo", "p(answer)": 0.1, "rank": 3},
        {"model": "b", "prompt": "The capital of France is", "answer": "Paris", "p(answer)": 0.6, "rank": 1},
        {"model": "b", "prompt": "The capital of Japan is", "answer": "Tokyo", "p(answer)": 0.5, "rank": 1},
    ])


def test_setup_numbers_on_a_frame_whose_answer_is_known():
    nums = K.setup_numbers(_frame(), n_models=2)
    assert nums == {"n_models": 2, "p_paris": 0.8, "mean_p_answer": pytest.approx(0.5), "top1_accuracy": 0.75,
                    "n_facts": 2}  # p_paris: the first model's; facts counted once over models
    assert all(type(v) in (int, float) for v in nums.values())  # plain numbers: they go into JSON and glue


def test_setup_numbers_on_the_module_output(lms):
    probs = K.fact_probabilities(lms, [("The capital of France is", "Paris"), *FACTS])
    nums = K.setup_numbers(probs, len(lms))
    assert nums["n_facts"] == 3 and nums["n_models"] == 2
    assert nums["p_paris"] == probs["p(answer)"].iloc[0]
    assert nums["top1_accuracy"] == pytest.approx((probs["rank"] == 1).mean())


def test_fact_probability_figure_has_one_bar_per_model_and_fact(close_figures):
    probs = _frame()
    fig = K.fact_probability_figure(probs)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert sorted(round(b.get_width(), 9) for b in bars) == sorted(probs["p(answer)"])  # bar length = p(answer)
    assert ax.get_xlim() == (0, 1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["The capital of France is", "The capital of Japan is"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    # each model's bars in its own colour, at its fact's row
    colours = {b.get_facecolor() for b in bars}
    assert len(colours) == 2
