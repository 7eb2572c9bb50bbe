"""The book: profiles, runner (``kq book`` / ``kq run``), site build and fact explorer, report and figures, claims
and verdicts, the scorecard, and the ``Chapter`` helper every notebook uses."""
