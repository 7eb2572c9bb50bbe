from collections import Counter

import torch

import kqlib
from kqlib.paper.mapping import MappingQuery, condition_neurons, run_mapping
from tiny import tiny_lm

PROMPT = "the capital of france is"


def test_condition_sets_and_random_control_share_the_layer_histogram():
    own = frozenset({(0, 1), (0, 2), (2, 5)})
    q = MappingQuery(PROMPT, 3, own, (frozenset({(0, 1), (1, 4)}), frozenset({(0, 1), (2, 6)})))
    sets = condition_neurons(q, n_layers=3, n_neurons=48, seed=0)
    assert sets["union"] == {(0, 1), (1, 4), (2, 6)} and sets["intersection"] == {(0, 1)}
    assert Counter(l for l, _ in sets["random"]) == Counter(l for l, _ in own)
    assert not sets["random"] & own
    assert sets["random"] == condition_neurons(q, 3, 48, seed=0)["random"]  # deterministic
    assert sets["random"] != condition_neurons(q, 3, 48, seed=1)["random"]


def test_suppressing_the_top_neurons_lowers_the_answer_probability_more_than_random():
    lm = tiny_lm("llama")
    t = lm.answer_token_ids(PROMPT, "paris")[0]
    scores = kqlib.attribute(lm, PROMPT, t, steps=10)
    top = {(int(i) // lm.n_neurons, int(i) % lm.n_neurons) for i in torch.topk(scores.flatten(), 5).indices}
    q = MappingQuery(PROMPT, t, frozenset(top), (frozenset(),))
    df = run_mapping(lm, [q])
    sup = df[df.operation == "suppress"].set_index("condition")
    assert sup.loc["own", "d_prob"] < sup.loc["random", "d_prob"]
    assert sup.loc["own", "d_prob"] < 0
    assert sup.loc["union", "n_neurons"] == 0 and sup.loc["union", "d_prob"] == 0.0  # empty set: no-op
    enh = df[df.operation == "enhance"].set_index("condition")
    assert enh.loc["own", "d_prob"] > 0


def test_union_matched_is_a_seeded_subset_of_the_union_as_large_as_the_intersection():
    nbrs = (frozenset({(0, 1), (0, 2), (1, 4), (1, 5)}), frozenset({(0, 1), (0, 2), (2, 6), (2, 7)}))
    q = MappingQuery(PROMPT, 3, frozenset({(0, 1)}), nbrs)
    draws = [condition_neurons(q, 3, 48, seed=s)["union_matched"] for s in range(20)]
    for d in draws:
        assert len(d) == 2 and d <= set().union(*nbrs)
    assert draws[0] == condition_neurons(q, 3, 48, seed=0)["union_matched"]  # deterministic
    assert len({frozenset(d) for d in draws}) > 1  # not always the intersection itself
    empty = MappingQuery(PROMPT, 3, frozenset({(0, 1)}), (frozenset({(0, 1)}), frozenset({(1, 1)})))
    assert condition_neurons(empty, 3, 48, seed=0)["union_matched"] == set()
