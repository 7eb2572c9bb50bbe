"""Reading (prompt, target) from the query objects users pass (pairs, ParaRel queries, rows)."""

from __future__ import annotations

from kqlib.errors import ParameterError


def query_prompt_target(q) -> tuple[str, object]:
    """Accept ``(prompt, target)`` pairs or objects with ``.prompt`` and ``.target_id`` / ``.target`` / ``.obj``."""
    if isinstance(q, (tuple, list)) and len(q) == 2:
        return q[0], q[1]
    for attr in ("target_id", "target", "obj"):
        if getattr(q, attr, None) is not None:
            return q.prompt, getattr(q, attr)
    raise ParameterError(f"cannot read (prompt, target) from {q!r}")
