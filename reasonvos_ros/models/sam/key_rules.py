"""Renaming ORIGINAL segment-anything checkpoint keys with ordered regex rules (shared by the SAM part modules)."""

from __future__ import annotations

import re
from collections.abc import Iterable

KeyRules = tuple[tuple[re.Pattern[str], str], ...]


def compile_key_rules(rules: Iterable[tuple[str, str]]) -> KeyRules:
    """``(pattern, replacement)`` pairs, patterns compiled; the first matching rule wins in ``rename_key``."""
    return tuple((re.compile(pattern), replacement) for pattern, replacement in rules)


def rename_key(rules: KeyRules, original_key: str) -> str | None:
    """``original_key`` rewritten by the first rule whose pattern matches it, None if no rule does."""
    for pattern, replacement in rules:
        if pattern.match(original_key):
            return pattern.sub(replacement, original_key)
    return None
