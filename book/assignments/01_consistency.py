# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment 1: consistency scores and K_C / K_I
#
# A fact is asked with several paraphrased *neighbor queries* $q_1, \dots, q_k$. Localizing each query gives
# a set of knowledge neurons $\mathcal N_{q_i}$, each neuron a pair `(layer, index)`. The *knowledge
# localization* (KL) assumption says the sets should be the same for every query; the paper measures how far
# they are from that with a **consistency score** and splits facts into consistent (K_C) and inconsistent
# (K_I) knowledge.
#
# With $\mathcal U = \bigcup_i \mathcal N_{q_i}$ and $c(n) = \#\{i : n \in \mathcal N_{q_i}\}$:
#
# $$\mathrm{CS}_1 = \frac{|\bigcap_{i} \mathcal N_{q_i}|}{|\mathcal U|}, \qquad
#   \mathrm{CS}_2 = \frac{1}{|\mathcal U|} \sum_{n \in \mathcal U} \frac{c(n)}{k}.$$
#
# Both are 0 when the union is empty (no query has a knowledge neuron). A fact is **inconsistent** (K_I)
# when its score is below a threshold $\theta$ (the paper's example: $\theta = 0.3$ on CS2).
#
# Replace every `# YOUR CODE HERE` / `raise NotImplementedError(...)` by your code. Cells starting with
# `# check:` are checks you can run yourself; the grader runs them again, plus hidden ones.
# Do not use `kqlib.paper.consistency` in your answers (the hidden checks compare against it).

# %%
from itertools import combinations

# Hand-made knowledge-neuron sets: fact -> one KN set per neighbor query.
FACTS = {
    "Suleiman I / position / Shah": [
        {(10, 3), (10, 7), (11, 2)},
        {(10, 3), (10, 7), (11, 2)},
        {(10, 3), (10, 7), (11, 2), (9, 40)},
    ],
    "Christoph Ahlhaus / position / mayor": [
        {(4, 1), (7, 9)},
        {(8, 5), (11, 30)},
        {(2, 17), (9, 9)},
        {(6, 2), (7, 9)},
    ],
    "Paris / capital of / France": [
        {(5, 5), (6, 6)},
        {(5, 5), (6, 6), (7, 7)},
    ],
    "Dante / native language / Italian": [
        {(3, 3)},
        {(3, 3), (4, 4)},
        {(3, 3), (5, 5)},
        {(3, 3), (6, 6)},
    ],
    "Nobody knows / anything / empty": [set(), set()],
}

# %% [markdown]
# ## Q1 (3 points): CS1
#
# Write `cs1(sets)` for a list of $k \ge 2$ sets.

# %%
def cs1(sets):
    """|intersection of all sets| / |union of all sets|; 0.0 when the union is empty."""
    ### BEGIN SOLUTION q1
    sets = [set(s) for s in sets]
    everything = set().union(*sets)
    if len(everything) == 0:
        return 0.0
    shared_by_all = set.intersection(*sets)
    return len(shared_by_all) / len(everything)
    ### END SOLUTION


# %% tags=["check"]
# check: q1 (1 point)
assert cs1([{1, 2}, {1, 2}]) == 1.0, "identical sets must score 1"
assert cs1([{1}, {2}]) == 0.0, "disjoint sets must score 0"

# %% tags=["hidden-check"]
# check: q1 (2 points)
import random as _r
import kqlib.paper.consistency as _kc
assert cs1([set(), set()]) == 0.0, "cs1 of two empty sets should be 0.0 (empty union), not an error"
assert abs(cs1([{1, 2, 3}, {2, 3, 4}, {3, 4, 5}]) - 1 / 5) < 1e-12, "cs1([{1,2,3},{2,3,4},{3,4,5}]) should be 1/5"
_g = _r.Random(1)
for _ in range(200):
    _sets = [set(_g.sample(range(12), _g.randint(0, 6))) for _ in range(_g.randint(2, 5))]
    assert abs(cs1(_sets) - _kc.cs1(_sets)) < 1e-12, f"cs1 is wrong for {_sets}: expected {_kc.cs1(_sets)}"

# %% [markdown]
# ## Q2 (3 points): CS2
#
# Write `cs2(sets)`: the average, over the neurons of the union, of the fraction of queries that contain
# the neuron.

# %%
def cs2(sets):
    """(1/|U|) * sum over n in U of c(n)/k; 0.0 when the union is empty."""
    ### BEGIN SOLUTION q2
    sets = [set(s) for s in sets]
    k = len(sets)
    union_of_all = set().union(*sets)
    if not union_of_all:
        return 0.0
    membership = [sum(n in s for s in sets) / k for n in union_of_all]
    return sum(membership) / len(union_of_all)
    ### END SOLUTION


# %% tags=["check"]
# check: q2 (1 point)
assert cs2([{1, 2}, {1, 2}]) == 1.0, "identical sets must score 1"
assert abs(cs2([{1}, {2}, {3}]) - 1 / 3) < 1e-12, "k pairwise disjoint sets must score 1/k"

# %% tags=["hidden-check"]
# check: q2 (2 points)
import random as _r
import kqlib.paper.consistency as _kc
assert cs2([set(), set(), set()]) == 0.0, "cs2 of empty sets should be 0.0 (empty union), not an error"
_g = _r.Random(2)
for _ in range(200):
    _sets = [set(_g.sample(range(12), _g.randint(0, 6))) for _ in range(_g.randint(2, 5))]
    assert abs(cs2(_sets) - _kc.cs2(_sets)) < 1e-12, f"cs2 is wrong for {_sets}: expected {_kc.cs2(_sets)}"

# %% [markdown]
# ## Q3 (3 points): classify the facts
#
# Compute both scores for every fact of `FACTS` and classify each fact with CS2 and $\theta = 0.3$.
# Store `scores` as a dict `fact -> (cs1, cs2)` and `labels` as a dict `fact -> "K_C" | "K_I"`.

# %%
THETA = 0.3
### BEGIN SOLUTION q3
scores = {fact: (cs1(sets), cs2(sets)) for fact, sets in FACTS.items()}
labels = {fact: ("K_I" if pair[1] < THETA else "K_C") for fact, pair in scores.items()}
### END SOLUTION

for fact in FACTS:
    print(f"{fact:40s} CS1={scores[fact][0]:.2f} CS2={scores[fact][1]:.2f} -> {labels[fact]}")

# %% tags=["check"]
# check: q3 (1 point)
assert set(labels) == set(FACTS), "labels needs one entry per fact"
assert set(labels.values()) <= {"K_C", "K_I"}, "labels must be 'K_C' or 'K_I'"
assert labels["Suleiman I / position / Shah"] == "K_C"

# %% tags=["hidden-check"]
# check: q3 (2 points)
import kqlib.paper.consistency as _kc
for _fact, _sets in FACTS.items():
    _want = (_kc.cs1(_sets), _kc.cs2(_sets))
    assert all(abs(a - b) < 1e-9 for a, b in zip(scores[_fact], _want)), f"scores[{_fact!r}] should be {_want}"
    _lab = "K_I" if _kc.classify([_want[1]], THETA)[0] else "K_C"
    assert labels[_fact] == _lab, f"{_fact!r} is {_lab} under CS2 < {THETA}"

# %% [markdown]
# ## Q4 (2 points): the two scores disagree
#
# "Dante" above has CS1 = 0.25 but CS2 = 0.44: one neuron is shared by every query, the others by one query
# each. Build `my_sets`, a list of **three** KN sets whose **CS1 is exactly 0** but whose **CS2 is at least 0.6**
# (so the fact is K_I under a CS1 threshold of 0.3 but K_C under CS2).

# %%
### BEGIN SOLUTION q4
my_sets = [{"a", "b"}, {"b", "c"}, {"a", "c"}]  # every neuron in two of three queries: CS2 = 2/3
### END SOLUTION
print(cs1(my_sets), cs2(my_sets))

# %% tags=["hidden-check"]
# check: q4 (2 points)
import kqlib.paper.consistency as _kc
assert isinstance(my_sets, (list, tuple)) and len(my_sets) == 3, "my_sets must be a list of three sets"
assert _kc.cs1(my_sets) == 0.0, f"CS1 of my_sets is {_kc.cs1(my_sets):.3f}, not 0"
assert _kc.cs2(my_sets) >= 0.6, f"CS2 of my_sets is {_kc.cs2(my_sets):.3f} < 0.6"

# %% [markdown]
# ## Q5 (written, graded by hand)
#
# In two or three sentences: why does the paper classify with CS2 rather than CS1? What does CS1 do to a
# fact whose queries share a stable core of neurons but each add one or two neurons of their own?
#
# ### BEGIN SOLUTION q5
# CS1 counts a neuron as shared only if *every* query has it, so one extra or missing neuron in a single
# query lowers it, and with many queries it goes to 0 almost always (it shrinks with k). CS2 gives partial
# credit by the fraction of queries that hold each neuron: a stable core plus a few query-specific
# neurons still scores high, which is what "the same knowledge neurons" should mean in practice.
# ### END SOLUTION
