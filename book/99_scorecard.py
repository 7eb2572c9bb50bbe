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
# # Scorecard data
#
# This last notebook builds the scorecard shown near the front of the book ({doc}`scorecard`). It runs after
# every chapter, reads the claim rows each chapter wrote into its results file
# (`_build/results/<chapter>.json`, key `claims`) and lays them out in the order of `kqlib/book/claims/claims.toml`; nothing
# in it is typed by hand. A claim whose chapter has not been run in this build is listed as *not measurable
# here* with that reason, so the scorecard always has every claim.
#
# Each row was judged where it was measured, by the one rule of `kqlib.book.claims.verdicts.judge`:
#
# * **holds** — the 95 % interval (relations as the unit with at least 8 of them, else facts) excludes the null
#   on the paper's side, and the test over the same unit agrees where there is one;
# * **differs** — it excludes the null on the other side;
# * **inconclusive** — neither; where the paper states an effect, the row says how many units would be needed
#   to see it at 80 % power;
# * **not measurable here** — with the reason (a second model is needed, the claim is not testable this way,
#   the profile lacks the model, ...).

# %% tags=["parameters"]
profile = "smoke"

# %%
from kqlib.book.chapter import Chapter
from kqlib.book.chapters import ch99_scorecard as K

ch = Chapter("99_scorecard", globals())
rows = K.collect(K.results_dir())

# %% [markdown]
# ## At a glance
#
# One primary row per headline result of the paper (the nine of the spec's §6) and model. Because nine
# claims are judged on the same run, their p-values (the test's, or the interval's by the normal
# approximation) are **Holm-adjusted across each model's primary family**: a "holds" or "differs" whose
# adjusted p is not below the claim's α shows as inconclusive here. Every other row is secondary and
# judged unadjusted in its chapter. The forest plot shows each primary estimate and its 95 % interval
# against the claim's null (at 0), with the paper's effect marked where the paper states one.

# %%
K.grid_styled(rows)

# %%
if any(r.get("estimate") is not None for r in K.headline_rows(rows)):
    ch.save(K.forest_figure(rows), "07_forest", "forest")

# %% [markdown]
# ## Every claim

# %%
ch.glue_display("scorecard_table", K.table(rows))
print(f"scorecard written to {K.write_table(rows).name} for the page near the front of the book")
ch.glue({f"n_{k.split()[0]}": v for k, v in K.counts(rows).items()} | {"n_rows": len(rows)})
K.table(rows)

# %% [markdown]
# Of the {glue:text}`n_rows` rows, {glue:text}`n_holds` hold, {glue:text}`n_differs` differ,
# {glue:text}`n_inconclusive` are inconclusive and {glue:text}`n_not` are not measurable here.

# %%
ch.finish(scorecard=rows, headline=K.headline_rows(rows))
