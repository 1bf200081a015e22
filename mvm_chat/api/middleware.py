"""Per-request context: an id (``X-Request-Id``), a log line, and request metrics."""

from __future__ import annotations

import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from mvm_chat.api.errors import problem_for
from mvm_chat.logging import end_request_line, start_request_line
from mvm_chat.metrics import Metrics
from mvm_chat.store.models import new_id

log = structlog.get_logger("mvm_chat.request")


def _route(scope: Scope) -> str:
    return str(scope.get("path_template") or "unmatched")


class RequestContextMiddleware:
    """Binds ``request_id`` to logs and the request state; counts and times each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        line = start_request_line(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", b"app;dur=%.3f" % took))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            status = problem_for(exc)[0]
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            method = scope.get("method", "")
            self.metrics.series(self.metrics.requests, route, method, str(status)).inc()
            self.metrics.series(self.metrics.latency, route, method).observe(elapsed)
            user = scope.get("user")
            fields = end_request_line(line)
            fields.update(
                method=method,
                path=scope.get("path"),
                status=status,
                latency_ms=round(elapsed * 1000, 2),
                tenant=getattr(user, "tenant", None),
            )
            log.info("request", **fields)


async def request_id_header(message: Message, scope: Scope) -> None:
    """``X-Request-Id`` on every HTTP response (an app-level ``before_send`` hook): the id of
    the request's log line, or a new one for a response no route's middleware saw (an unknown
    path, a method the route lacks)."""
    if message["type"] != "http.response.start":
        return
    state = scope.setdefault("state", {})
    request_id = state.get("request_id")
    if request_id is None:
        request_id = state["request_id"] = new_id()
    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
