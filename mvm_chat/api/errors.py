"""The one mapping from exceptions to JSON problem details (RFC 9457)."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError

from mvm_chat import redaction
from mvm_chat.errors import MvmChatError, ServiceUnavailable, TooManyRequests
from mvm_chat.store.db import DISCONNECTED
from mvm_chat.store.pg_errors import is_bad_text

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def problem_body(status: int, detail: str, title: str | None = None) -> dict[str, Any]:
    """Problem details, plus an OpenAI-style ``error`` member so that SDKs show the detail."""
    title = title or _TITLES.get(status, "Error")
    return {
        "type": "about:blank",
        "status": status,
        "title": title,
        "detail": detail,
        "error": {"message": detail, "type": title.lower().replace(" ", "_"), "code": status},
    }


def problem(
    status: int, detail: str, title: str | None = None, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        problem_body(status, detail, title),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def problem_for(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """Status, detail and headers for any exception; never a stack trace."""
    if isinstance(exc, MvmChatError):
        retry = exc.retry_after if isinstance(exc, ServiceUnavailable | TooManyRequests) else None
        headers = {"Retry-After": str(retry)} if retry is not None else {}
        return exc.status_code, redaction.scrub(exc.detail), headers
    if isinstance(exc, ValidationException):
        return _validation(exc)
    if is_bad_text(exc):
        return 422, "input: text may not contain NUL (\\u0000) characters", {}
    if _database_unreachable(exc):
        return 503, "The database is unavailable; retry later.", {"Retry-After": "5"}
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        return exc.status_code, str(exc.detail), headers
    return HTTP_500_INTERNAL_SERVER_ERROR, "An unexpected error occurred.", {}


def _database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a lost or refused database connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DISCONNECTED):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def _validation(exc: ValidationException) -> tuple[int, str, dict[str, str]]:
    """A body that parses but has a bad field is 422 naming it; anything else (malformed
    JSON) is 400."""
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict) and item.get("key") is not None:
            key = str(item["key"]).removeprefix("$.").removeprefix("$") or "body"
            return 422, f"{key}: {item.get('message', 'invalid')}", {}
    return 400, str(exc.detail), {}


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, detail, headers = problem_for(exc)
    if status >= 500 and not isinstance(exc, MvmChatError):
        log.error("request.unhandled", path=request.url.path, exc_info=exc)
    return problem(status, detail, headers=headers or None)
