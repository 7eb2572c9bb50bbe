"""Reading (prompt, target) from the query objects users pass (pairs, ParaRel queries, rows)."""

from __future__ import annotations

from kqlib.attribution.targets import check_prompt_text
from kqlib.errors import ParameterError


def query_prompt_target(q) -> tuple[str, object]:
    """Accept ``(prompt, target)`` pairs or objects with ``.prompt`` and ``.target_id`` / ``.target`` / ``.obj``;
    the prompt must be text (:func:`kqlib.attribution.targets.check_prompt_text`; the model-dependent checks
    follow in :func:`~kqlib.attribution.targets.target_token`)."""

    if isinstance(q, (tuple, list)) and len(q) == 2:
        return check_prompt_text(q[0]), q[1]
    for attr in ("target_id", "target", "obj"):
        if getattr(q, attr, None) is not None:
            return check_prompt_text(getattr(q, "prompt", None)), getattr(q, attr)
    raise ParameterError(f"cannot read (prompt, target) from {q!r}: give (prompt, target) pairs or objects with "
                         ".prompt and .target_id / .target / .obj")
