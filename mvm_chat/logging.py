"""structlog set-up: JSON lines on stderr, request context bound through contextvars."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import msgspec
import structlog

from mvm_chat import redaction

SECRET_KEYS = frozenset({"authorization", "api_key", "key", "token", "password"})
# A key ends at a space, "&", a quote or a backslash (it runs on rendered JSON lines, where
# eating the backslash of an escaped quote would break the line)
_TOKEN_IN_TEXT = re.compile(r"(token=|Bearer\s+)[^\s&\"'\\]+", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Hide keys carried in a URL query (``?token=``) or a bearer header."""
    lowered = text.lower()
    if "token=" not in lowered and "bearer" not in lowered:
        return text  # the usual case, a tenth of the regular expression's time
    return _TOKEN_IN_TEXT.sub(r"\1[redacted]", text)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event.keys() & SECRET_KEYS:
        event[key] = "[redacted]"
    return event


def _scrub_secrets(_logger: Any, _name: str, line: Any) -> Any:
    """The rendered line without keys in a query or a bearer header, nor any configured
    secret (nested values and tracebacks too): it runs after the JSON renderer."""
    return redaction.scrub(redact_text(line)) if isinstance(line, str) else line


_JSON = msgspec.json.Encoder(enc_hook=repr)  # what JSON cannot hold is written as its repr


def _render(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """The event as one line of JSON (msgspec: a few times faster than ``json.dumps``, which
    showed in profiles with a line or two per request)."""
    return _JSON.encode(event).decode()


class _Timestamp:
    """``timestamp``: ISO 8601 in UTC with microseconds (``2026-11-30T19:44:36.963025Z``), the
    date and time of day formatted once a second rather than for every line."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second, text = self._second
        if int(now) != second:
            second = int(now)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)  # one assignment: safe for threads that log
        event["timestamp"] = f"{text}.{int((now - second) * 1_000_000):06d}Z"
        return event


class RequestLine:
    """The fields of one HTTP request's log line, gathered while the request runs.

    Shared by reference through a context variable, so that what a task the request started
    reports (a streamed reply runs in one) reaches the line too, where a context variable's own
    changes would stay in that task. Once the line is written it is closed: a late report
    (from a task that outlived the request) becomes a line of its own rather than vanishing."""

    __slots__ = ("fields", "open")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.open = True


_REQUEST_LINE: ContextVar[RequestLine | None] = ContextVar("mvm_chat_request_line", default=None)


def start_request_line(**bound: Any) -> RequestLine:
    """Start an HTTP request's log context with ``bound`` bound; what :func:`report` adds
    meanwhile goes on the one line the request middleware writes at its end
    (:func:`end_request_line`)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**bound)
    line = RequestLine()
    _REQUEST_LINE.set(line)
    return line


def end_request_line(line: RequestLine) -> dict[str, Any]:
    """Close ``line`` and return its fields, to write."""
    line.open = False
    return line.fields


def report(logger: Any, event: str, **fields: Any) -> None:
    """Log ``fields`` on the current HTTP request's line while there is one (one line per
    request, not one per step: each line costs the worker's hot path a few percent), else as
    an ``event`` line of their own (a turn over a WebSocket)."""
    line = _REQUEST_LINE.get()
    if line is not None and line.open:
        line.fields.update(fields)
    else:
        logger.info(event, **fields)


def configure_logging(level: str = "info") -> None:
    """Write every log line (ours, uvicorn's, alembic's) as JSON to stderr at ``level``."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _Timestamp(),
        _redact,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _render,
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
            _render,
            _scrub_secrets,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
