"""kqlib.paper.synapses: the dynamic-KN-selection experiment (knowledge synapses vs random control) on a tiny model."""

import math

import pytest
import torch

import kqlib
import kqlib.runs.many
from kqlib.paper import synapses as S
from kqlib.errors import ParameterError
from tiny import tiny_lm

PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    lm = tiny_lm("llama")
    t = lm.answer_token_ids(PROMPT, "paris")[0]
    scores = kqlib.attribute(lm, PROMPT, t, steps=6)
    last = scores[-1]  # neurons of the last layer read every earlier layer's attention
    kns = {(lm.n_layers - 1, int(i)) for i in torch.topk(last, 5).indices}
    cache = tmp_path_factory.mktemp("cache")
    return lm, t, kns, cache


def test_delta_activation_definition():
    a = torch.tensor([1.0, -2.0, 0.5])
    assert S.delta_activation(a, torch.zeros(3))[0] == pytest.approx(-1.0)  # every KN silenced
    assert S.delta_activation(a, a.clone()) == (0.0, 0.0)
    d, shift = S.delta_activation(a, 2 * a)  # doubled: magnitude +100 %
    assert d == pytest.approx(1.0) and shift == pytest.approx(1.0)
    assert all(math.isnan(v) for v in S.delta_activation(torch.zeros(2), torch.ones(2)))
    assert all(math.isnan(v) for v in S.delta_activation(torch.zeros(0), torch.zeros(0)))


def test_control_excludes_synapses_and_is_deterministic(setup):
    lm, t, _, cache = setup
    scores = S.synapse_scores(lm, PROMPT, t, steps=4, cache=cache)
    assert scores.shape[0] == lm.n_layers and scores.shape[-1] == lm.encode(PROMPT).shape[1]
    seed = S.query_seed(0, PROMPT, t)
    sets = S.synapse_sets(scores, 0.2, seed)
    assert sets["synapse"] and len(sets["control"]) == len(sets["synapse"])
    assert not sets["synapse"] & sets["control"]
    assert sets == S.synapse_sets(scores, 0.2, seed)
    assert sets["control"] != S.synapse_sets(scores, 0.2, S.query_seed(1, PROMPT, t))["control"]


def test_alpha_one_changes_nothing_and_suppression_changes_activations(setup):
    lm, t, kns, cache = setup
    df = S.run_synapse_experiment(lm, [(PROMPT, t)], [kns], t=0.2, alphas=(1.0, 0.0, 2.0), steps=4, cache=cache,
                                  meta=[{"fact_id": "f"}])
    assert len(df) == 2 * 3 and set(df["set"]) == {"synapse", "control"} and (df.fact_id == "f").all()
    one = df[df.alpha == 1.0]
    assert (one.d_act == 0.0).all() and (one.d_prob == 0.0).all() and (one.act_shift == 0.0).all()
    assert (one.p_after == one.p_before).all() and not one.flipped.any()
    sup = df[(df.alpha == 0.0) & (df["set"] == "synapse")].iloc[0]
    assert sup.n_entries > 0 and sup.n_kns == 5
    assert sup.d_act != 0.0 and sup.act_shift > 0 and sup.p_after != sup.p_before
    assert (df.groupby("set").n_entries.nunique() == 1).all()
    assert df[df["set"] == "control"].n_entries.iloc[0] == sup.n_entries
    assert (df.note == "").all()


def test_scores_are_cached(setup, monkeypatch):
    lm, t, _, cache = setup
    first = S.synapse_scores(lm, PROMPT, t, steps=3, cache=cache)

    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(kqlib.runs.many, "attribute_attention", boom)
    assert torch.equal(S.synapse_scores(lm, PROMPT, t, steps=3, cache=cache), first)
    torch.testing.assert_close(first, kqlib.attribute_attention(lm, PROMPT, t, steps=3))


def test_activation_states_before_matches_plain_forward(setup):
    lm, t, kns, cache = setup
    st = S.activation_states(lm, PROMPT, t, kns, alpha=0.0, steps=4, cache=cache)
    assert set(st.state) == {"before", "synapses", "control"} and len(st) == 3 * len(kns)
    vals, p, _ = S.kn_forward(lm, PROMPT, t, sorted(kns))
    before = st[st.state == "before"]
    assert before.activation.tolist() == vals.tolist() and before.p_answer.iloc[0] == p
    assert not torch.allclose(torch.tensor(st[st.state == "synapses"].activation.tolist(), dtype=torch.float64), vals)


def test_empty_kn_set_gives_nan_with_a_note(setup):
    lm, t, _, cache = setup
    df = S.run_synapse_experiment(lm, [(PROMPT, t)], [set()], alphas=(0.0,), steps=4, cache=cache)
    assert df.d_act.isna().all() and df.note.str.contains("no knowledge neurons").all()
    assert df.d_prob.notna().all()


def test_bad_arguments():
    lm = tiny_lm("llama")
    with pytest.raises(ParameterError):
        S.run_synapse_experiment(lm, [(PROMPT, 3)], [], steps=2)
    with pytest.raises(ParameterError):
        S.run_synapse_experiment(lm, [(PROMPT, 3)], [set()], t=1.5, steps=2)


def test_mass_matched_control_moves_as_much_attention_as_the_synapses():
    from kqlib.core.attention import random_non_synapses

    torch.manual_seed(0)
    row = torch.softmax(torch.randn(6, 4, 12) * 3, -1).double()
    syn = {(l, h, int(row[l, h].argmax())) for l, h in ((0, 0), (1, 2), (3, 1), (5, 3))}
    mass = lambda s: sum(float(row[e]) for e in s)  # noqa: E731
    matched = S.mass_matched_non_synapses(row, syn, seed=1)
    rand = random_non_synapses(row.shape, syn, len(syn), seed=1)
    assert len(matched) == len(syn) and not matched & syn
    assert abs(mass(matched) - mass(syn)) < 0.25 * mass(syn) < abs(mass(rand) - mass(syn))
    assert matched == S.mass_matched_non_synapses(row, syn, seed=1)  # seeded
