"""The scorecard page (``book/99_scorecard.py``, always the last notebook): every chapter's judged claims,
collected from the results files by :mod:`kqlib.book.claims.scorecard`.

The notebook imports this module and :class:`~kqlib.book.chapter.Chapter` only.
"""


# What the notebook calls besides this module's own functions (it imports this module and Chapter only).
from kqlib.book.claims.scorecard import collect, counts, table, write_table  # noqa: E402,F401
from kqlib.book.report import results_dir  # noqa: E402,F401
