"""Chapter.call: a chapter module's function takes plain keyword-only values; the notebook's ch.call fills them
from the chapter's parameters of the same name."""

from __future__ import annotations

import pytest

from kqlib.book.chapter import Chapter
from kqlib.book.profiles import rule_kw
from kqlib.errors import ParameterError


def _chapter(**params):
    return Chapter("99_test", params, names=list(params))


def shares(frame, scale=1.0, *, n_boot, seed, label="all"):
    return dict(frame=frame, scale=scale, n_boot=n_boot, seed=seed, label=label)


def test_keyword_only_parameters_come_from_the_chapter():
    ch = _chapter(n_boot=200, seed=3, scale=9.0)
    out = ch.call(shares, "cs")
    # positional-or-keyword `scale` is not filled (only keyword-only parameters are); `label` keeps its default
    assert out == dict(frame="cs", scale=1.0, n_boot=200, seed=3, label="all")
    assert ch.call(shares, "cs", label="K_I")["label"] == "K_I"


def test_explicit_keywords_win():
    ch = _chapter(n_boot=200, seed=3, label="K_C")
    out = ch.call(shares, "cs", 2.0, n_boot=50)
    assert out == dict(frame="cs", scale=2.0, n_boot=50, seed=3, label="K_C")


def test_a_parameter_the_chapter_lacks_is_refused_before_the_call():
    called = []

    def counted(frame, *, n_boot, seed):
        called.append(frame)

    ch = _chapter(n_boot=200)
    with pytest.raises(ParameterError, match=r"counted\(\) needs the parameter 'seed', which chapter 99_test "
                                             r"does not declare"):
        ch.call(counted, "cs")
    assert not called
    assert ch.call(shares, "cs", seed=1)["seed"] == 1


def test_rule_keywords_are_the_chapter_rule_s():
    assert _chapter(rule="adaptive", steps=4, tol=0.02).rule_kw == dict(rule="adaptive", steps=None, tol=0.02)
    assert _chapter(rule="riemann", steps=4, tol=0.02).rule_kw == dict(rule="riemann", steps=4, tol=None)
    assert _chapter(steps=4).rule_kw == dict(rule="adaptive", steps=None, tol=1e-2)  # the book's defaults
    assert rule_kw(rule="gauss", steps=8) == dict(rule="gauss", steps=8, tol=None)
