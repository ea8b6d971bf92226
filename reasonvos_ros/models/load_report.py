"""Readable listing of the key problems found while loading a checkpoint, shared by the SAM and VISA load reports."""

from __future__ import annotations

from collections.abc import Sequence


def key_problem_lines(
    missing: Sequence[str], unexpected: Sequence[str], shape_mismatches: Sequence[str], shown: int
) -> list[str]:
    """One indented line per non-empty problem list, naming at most ``shown`` keys and counting the rest."""
    lines = []
    for title, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape_mismatches)):
        if names:
            listed = names[:shown]
            more = f" ... and {len(names) - len(listed)} more" if len(names) > len(listed) else ""
            lines.append(f"  {title}: " + ", ".join(listed) + more)
    return lines
