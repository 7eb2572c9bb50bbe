"""The API's own errors before any work: a prompt that is not a string or longer than the model's positions
(naming the query index inside attribute_many), a memory budget that is not bytes, an AMIG baseline of the wrong
shape, an unknown dtype, a threshold that is not a number."""

from __future__ import annotations

import pytest
import torch

import kqlib
from kqlib.attribution import neurons
from kqlib.errors import ParameterError
from kqlib.runs import many
from tiny import tiny_lm


@pytest.fixture
def lm(monkeypatch):
    lm = tiny_lm("llama")

    def no_work(*a, **k):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(neurons, "base_pass", no_work)  # the first forward pass of an attribution
    monkeypatch.setattr(many, "attribute", no_work)
    return lm


@pytest.mark.parametrize("prompt,expect", [(None, "prompt must be a non-empty string, got NoneType None"),
                                           (123, "prompt must be a non-empty string, got int 123"), ("  ", "prompt is empty")])
def test_a_prompt_that_is_not_text_is_refused(lm, prompt, expect):
    with pytest.raises(ParameterError, match=expect):
        kqlib.attribute(lm, prompt, "paris")
    with pytest.raises(ParameterError, match="query 1 of 2: " + expect):
        kqlib.attribute_many(lm, [("the capital of france is", "paris"), (prompt, "paris")], cache=None,
                             use_cache=False, progress=False)


def test_a_prompt_longer_than_the_model_names_its_query_index(lm):
    long = " ".join(["the capital of france is"] * 40)  # 200 tokens; the tiny model has 128 positions
    with pytest.raises(ParameterError) as err:
        kqlib.attribute_many(lm, [("the capital of france is", "paris")] * 2 + [(long, "paris")], use_cache=False,
                             progress=False)
    msg = str(err.value)
    assert msg.startswith("query 2 of 3:") and "at most 128 positions" in msg and "tokens long" in msg
    with pytest.raises(ParameterError, match="at most 128 positions"):
        kqlib.attribute(lm, long, "paris")


@pytest.mark.parametrize("budget", ["1GB", 0, 1.5e9, True])
def test_a_memory_budget_that_is_not_bytes_is_refused(lm, budget):
    with pytest.raises(ParameterError, match="memory_budget must be a positive number of bytes"):
        kqlib.attribute(lm, "the capital of france is", "paris", memory_budget=budget)


@pytest.mark.parametrize("make", [lambda lm: torch.zeros(lm.n_layers, lm.n_neurons + 1),
                                  lambda lm: torch.zeros(lm.n_neurons), lambda lm: [[0.0]],
                                  lambda lm: torch.full((lm.n_layers, lm.n_neurons), float("nan"))])
def test_an_amig_baseline_of_the_wrong_shape_is_refused(lm, make):
    baseline = make(lm)
    with pytest.raises(ParameterError, match="AMIG baseline"):
        kqlib.attribute(lm, "the capital of france is", "paris", method="amig", baseline=baseline)
    with pytest.raises(ParameterError, match="AMIG baseline"):
        kqlib.attribute_many(lm, [("the capital of france is", "paris")], method="amig", baseline=baseline,
                             use_cache=False, progress=False)


def test_a_baseline_for_another_method_is_refused(lm):
    with pytest.raises(ParameterError, match="only used by method='amig'"):
        kqlib.attribute(lm, "the capital of france is", "paris", method="ig",
                        baseline=torch.zeros(lm.n_layers, lm.n_neurons))


@pytest.mark.parametrize("dtype", ["float17", "int8", torch.int64, 3])
def test_an_unknown_dtype_is_refused_before_loading(monkeypatch, dtype):
    import kqlib.core.models as M

    monkeypatch.setattr(M, "check_model_name", lambda name: (_ for _ in ()).throw(AssertionError("loading")))
    with pytest.raises(ParameterError, match="dtype"):
        kqlib.load("smollm2-135m", dtype=dtype)


@pytest.mark.parametrize("t", ["0.2", None, True, 1.5])
def test_a_threshold_that_is_not_a_number_in_range_is_refused(t):
    with pytest.raises(ParameterError, match="threshold t must be a number in \\[0, 1\\]"):
        kqlib.knowledge_neurons(torch.rand(2, 3), t=t)
    assert kqlib.knowledge_neurons(torch.tensor([[0.1, 1.0]]), t=0.2) == {(0, 1)}
