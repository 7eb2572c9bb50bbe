"""The scorecard page (``book/99_scorecard.py``, always the last notebook): every chapter's judged claims,
collected from the results files by :mod:`kqlib.book.claims.scorecard`, the headline grid and the forest plot.

The notebook imports this module and :class:`~kqlib.book.chapter.Chapter` only; everything it calls lives in
:mod:`kqlib.book.claims.scorecard` and is reached here.
"""

from kqlib.book.claims.scorecard import (  # noqa: F401 (the notebook's K.*)
    collect, counts, forest_figure, grid_styled, headline_rows, table, write_table)
from kqlib.book.report import results_dir  # noqa: F401
