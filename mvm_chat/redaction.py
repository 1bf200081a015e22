"""The configured secrets of this process, and scrubbing them out of text.

Every secret the service reads from the environment (a model's ``api_key_env``, a plugin's
``{env = "VAR"}`` setting) is remembered here when it is read; text that leaves the process
(log lines, error details, an upstream's error message) passes :func:`scrub` first, so that a
secret echoed back by an upstream or raised by a plugin never reaches a client or a log.
"""

from __future__ import annotations

REDACTED = "[redacted]"
MIN_LENGTH = 8
"""Shorter values are not treated as secrets: scrubbing them would mangle ordinary text."""

_known: tuple[str, ...] = ()
"""Longest first, so that a secret containing another is replaced whole. Process-wide on
purpose: log lines are process-wide too, and a secret read by any app instance of this process
must stay out of all of them."""


def remember(value: str) -> str:
    """Treat ``value`` as a secret from now on; returns it unchanged."""
    global _known
    if len(value) >= MIN_LENGTH and value not in _known:
        _known = tuple(sorted({*_known, value}, key=len, reverse=True))
    return value


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``[redacted]``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
