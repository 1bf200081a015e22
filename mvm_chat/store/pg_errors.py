"""Database errors that are the input's fault, not the server's."""

from __future__ import annotations

BAD_TEXT_SQLSTATES = frozenset({"22021", "22P05"})
"""character_not_in_repertoire, untranslatable_character: Postgres text cannot hold NUL."""


def is_bad_text(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is Postgres refusing a text value (a NUL in it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if str(getattr(current, "sqlstate", "") or getattr(current, "pgcode", "")) in (
            BAD_TEXT_SQLSTATES
        ):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False
