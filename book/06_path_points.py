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
# # How many path points?
#
# Integrated gradients is an integral along a path, and every knowledge-neuron score in this book is a
# numerical approximation of it:
#
# $$\mathrm{Attr}(l, i) = a_{l,i} \int_0^1 \frac{\partial p(\alpha a_l)}{\partial a_{l,i}}\, d\alpha
# \;\approx\; a_{l,i} \sum_{k=1}^{n} w_k \frac{\partial p(\alpha_k a_l)}{\partial a_{l,i}} .$$
#
# The paper, like the knowledge-neurons code it builds on, uses the **Riemann** rule with $n = 20$:
# $\alpha_k$ evenly spaced on $[0, 1]$ with both ends, $w_k = 1/n$. **Gauss–Legendre** nodes and weights
# integrate polynomials of degree up to $2n - 1$ exactly, so a smooth integrand needs far fewer points.
# $n = 1$ with the Riemann rule is $a \cdot \nabla p(a)$, the *attribution-patching* estimate.
# The cost of an attribution is proportional to $n$: every node is one gradient of $p$ for every layer
# (the staircase engine of `kqlib.attribution.engine` batches the nodes of all layers).
#
# The Gauss–Legendre rule on $[0, 1]$ takes the roots $\xi_k$ of the Legendre polynomial $P_n$ and maps them,
# $\alpha_k = (\xi_k + 1)/2$, with weights $w_k = \omega_k / 2$ where
# $\omega_k = 2 / \big((1 - \xi_k^2) P_n'(\xi_k)^2\big)$. Both rules are in `kqlib.attribution.quadrature`
# and both are selectable everywhere an attribution is made: `kqlib.attribute(..., rule="gauss", steps=8)`,
# `kq attribute --rule gauss --steps 8`, or a chapter parameter (`-p rule=gauss -p steps=8`). The rule is part
# of the attribution cache key, so results of different rules never mix.
#
# This page measures, on ParaRel queries, the error of each rule against a high-order reference integral
# (Gauss–Legendre with `reference_points` nodes), and the Jaccard index of the knowledge-neuron sets
# ($t$ = `t_threshold`) against the reference's, as $n$ grows. Formulas: `kqlib.paper.path_points`.

# %% tags=["parameters"]
models = ["smollm2-135m"]
relations = ["P36", "P103"]
n_facts_per_relation = 2
n_queries = 4  # queries sampled from those facts (seeded)
counts = [1, 2, 4, 8, 20]
rules = ["riemann", "gauss"]
reference_points = 32
method = "ig"
site = "post"
t_threshold = 0.2
seed = 0
executor = "local"
profile = "smoke"

# %%
import random
import time

started = time.time()

import matplotlib.pyplot as plt
import pandas as pd

import kqlib
from kqlib.book import figures
from kqlib.paper import path_points
from kqlib.book import report
from kqlib.paper.scans import scan_models

report.quiet()

# %% [markdown]
# ## Queries and attributions
#
# Facts the model answers (as in every chapter), then `n_queries` of their queries, the same for every rule
# and number of points. Each (rule, $n$) is one cached attribution per query. The ParaRel scan is cached too;
# a model that answers none of these facts is left out with a warning, and when no model is left the chapter
# stops and says what to run instead (`kq data --model NAME` lists the facts a model knows, relation by
# relation, and prints the `-p relations=[...]` to rerun with).

# %%
lms = [kqlib.load(name) for name in models]
scans = scan_models(lms, relations or None, n_facts_per_relation or None, seed=seed, min_correct=1, progress=False)
lms = [lm for lm in lms if lm.name in scans]
frames = []
for lm in lms:
    ds = scans[lm.name]
    queries = random.Random(seed).sample(ds.queries, min(n_queries, len(ds.queries)))
    frames.append(path_points.convergence(lm, queries, counts, rules, reference_points=reference_points,
                                          method=method, site=site, t=t_threshold, progress=False,
                                          executor=executor))
df = pd.concat(frames, ignore_index=True)
table = path_points.summary(df)
table.style.format({"median_error": "{:.2e}", "p90_error": "{:.2e}", "mean_jaccard": "{:.3f}"}).hide(axis="index")

# %% [markdown]
# ## Error and agreement as the number of points grows
#
# Left: median relative error $\max|S_{r,n} - S^*| / \max|S^*|$ over the queries (log scale). Right: mean
# Jaccard index of the knowledge-neuron sets against the reference's.

# %%
fig = figures.path_points(table)
figures.save(fig, "06_path_points")
plt.show()

# %%
numbers = path_points.headline(df, baseline=("riemann", 20))
report.glue_numbers({k: v for k, v in numbers.items() if k != "summary"})

# %% [markdown]
# How to read the figure. A rule of order $m$ has an error that falls like $n^{-m}$: a straight line of slope
# $-m$ on the log-log panel. The Riemann rule with both end points weights each node $1/n$, which is the
# trapezoid rule with the end weights off by $1/(2n)$, so its error falls only like $1/n$. The
# Gauss–Legendre error falls much faster until it reaches the float32 rounding floor of the scores (about
# $10^{-6}$ relative), where the curve flattens: below that floor no rule can do better, and the reference
# itself is only that accurate.
#
# The right panel is what the paper's claims depend on: a knowledge-neuron set changes only when a score
# crosses the threshold $t \max \mathrm{Attr}$, so a small score error leaves the sets unchanged except for
# neurons that sit right at the threshold. A mean Jaccard index of 1 means identical sets for every query.

# %% [markdown]
# ## What this run shows
#
# Over {glue:text}`n_queries_per_model` queries per model, Riemann with 20 points (the paper's setting) has a
# median relative error of at most {glue:text}`baseline_median_error:.1e` against the reference and a mean
# Jaccard index of at least {glue:text}`baseline_mean_jaccard:.3f`. The cheapest setting that is at least as
# accurate on every model (median error no larger, mean Jaccard no smaller) is
# **{glue:text}`cheapest_rule` with {glue:text}`cheapest_points` points**.
# The `cpu` profile uses the setting this page reports for the profile's own run (see `kqlib/book/profiles.toml`);
# the `paper` profile keeps Riemann-20.
#
# Where this matters. The paper makes no claim about integration accuracy, so this page has no
# "Paper vs this run" table; it decides how much of the paper a CPU can show. Every chapter's cost is
# dominated by attributions, and an attribution's cost is proportional to $n$: a rule that needs 8 points
# instead of 20 lets the same two hours hold two and a half times as many facts.
#
# **Summary.** The path integral behind every knowledge-neuron score is smooth in $\alpha$; a rule that
# exploits smoothness reaches the paper's accuracy with fewer gradient evaluations, and the
# knowledge-neuron sets — what the paper's claims are about — are already stable at that accuracy.
#
# **Exercises.**
# 1. Rerun with `method="amig"` (`kq run 06 -p method=amig`): does the baseline change how many points are needed?
# 2. How large is the error of attribution patching ($n = 1$)? Which neurons does it get wrong: find a query whose
#    knowledge-neuron set changes most between $n = 1$ and the reference.
# 3. Why does Riemann with both ends have error $O(1/n)$ rather than the trapezoid rule's $O(1/n^2)$?

# %%
parameters = dict(models=models, relations=relations, n_facts_per_relation=n_facts_per_relation,
                  n_queries=n_queries, counts=counts, rules=rules, reference_points=reference_points, method=method,
                  site=site, t_threshold=t_threshold, seed=seed, executor=executor, profile=profile)
run = report.run_record(lms, parameters=parameters, started=started)
path = report.write_results("06_path_points", numbers, run)
