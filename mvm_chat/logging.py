"""structlog set-up: JSON lines on stderr, request context bound through contextvars."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from mvm_chat import redaction

SECRET_KEYS = frozenset({"authorization", "api_key", "key", "token", "password"})
_TOKEN_IN_TEXT = re.compile(r"(token=|Bearer\s+)[^\s&\"']+", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Hide keys carried in a URL query (``?token=``) or a bearer header."""
    return _TOKEN_IN_TEXT.sub(r"\1[redacted]", text)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event.keys() & SECRET_KEYS:
        event[key] = "[redacted]"
    for key, value in event.items():
        if isinstance(value, str) and ("token=" in value or "Bearer" in value):
            event[key] = redact_text(value)
    return event


def _scrub_secrets(_logger: Any, _name: str, line: Any) -> Any:
    """The configured secrets out of a rendered line (nested values and tracebacks too);
    it runs after the JSON renderer, so ``line`` is the rendered string."""
    return redaction.scrub(line) if isinstance(line, str) else line


def configure_logging(level: str = "info") -> None:
    """Write every log line (ours, uvicorn's, alembic's) as JSON to stderr at ``level``."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
                _scrub_secrets,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
            _scrub_secrets,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
