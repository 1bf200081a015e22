"""What guards the HTTP surface besides keys: allowed hosts, CORS, per-key limits.

- ``Host``: a connection that arrives over loopback must name a loopback host (or one of
  ``server.allowed_hosts``), so that a web page cannot reach a server on this machine by
  rebinding its own DNS name to 127.0.0.1; with ``allowed_hosts`` set, every connection must
  name one of them (or, over loopback, a loopback host).
- CORS: only ``server.cors_origins`` (by default pages served from this machine).
- Limits (``[limits]``): requests per minute per key on every authenticated route, and answers
  in progress per key on the turn routes (WebSocket turns take theirs in ``api/ws.py``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar import WebSocket
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from mvm_chat.cache.ratelimit import RateLimiter, StreamSlots
from mvm_chat.errors import BadRequest, TooManyRequests
from mvm_chat.settings import Settings
from mvm_chat.store.keys import Principal

LOOPBACK_NAMES = frozenset({"localhost", "::1"})
TURN_PATH = re.compile(r"^/v1/(chat/completions|conversations/[^/]+/messages)/?$")
"""The routes that run a turn (and so hold a stream slot while they answer)."""


@functools.lru_cache(maxsize=256)
def _is_loopback(host: str) -> bool:
    # cached: parsing an IP address per request was 2% of the hot path's CPU
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The name in a ``Host`` header, without its port, lower case."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(host: str, allowed: list[str], over_loopback: bool) -> bool:
    """Whether ``host`` may be served on a connection (see the module's docstring)."""
    if _is_loopback(host):
        return True
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return not allowed and not over_loopback


class HostGuardMiddleware:
    """Refuses (400) a request whose ``Host`` this server does not serve."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            header = ""
            for name, value in scope.get("headers", []):
                if name == b"host":
                    header = value.decode("latin-1")
                    break
            server = scope.get("server") or ("", 0)
            if not host_allowed(host_of(header), self.allowed, _is_loopback(str(server[0]))):
                raise BadRequest(
                    f"host {header!r} is not served here (server.allowed_hosts lists the names)"
                )
        await self.app(scope, receive, send)


def cors_config(origins: list[str]) -> CORSConfig | None:
    """CORS for ``origins`` (``*`` as the port matches any port); None when there are none."""
    if not origins:
        return None
    patterns = [
        re.escape(o.removesuffix(":*")) + r"(:\d+)?" if o.endswith(":*") else re.escape(o)
        for o in origins
    ]
    return CORSConfig(
        allow_origin_regex="^(" + "|".join(patterns) + ")$",
        allow_origins=[],
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Conversation-Id",
            "Cache-Control",
        ],
        expose_headers=["X-Request-Id", "X-Conversation-Id", "Retry-After"],
        allow_credentials=False,
    )


class Protection:
    """The per-key limits of one app, and the middleware that applies them."""

    def __init__(self, settings: Settings) -> None:
        limits = settings.limits
        self.settings = settings
        self.limiter = RateLimiter(
            limits.requests_per_minute,
            settings.redis.url,
            settings.redis.key_prefix,
            settings.redis.timeout_s,
        )
        self.slots = StreamSlots(limits.concurrent_streams)

    @property
    def cors(self) -> CORSConfig | None:
        return cors_config(self.settings.server.cors_origins)

    def before_auth(self) -> list[DefineMiddleware]:
        return [DefineMiddleware(HostGuardMiddleware, allowed=self.settings.server.allowed_hosts)]

    def after_auth(self) -> list[DefineMiddleware]:
        return [DefineMiddleware(LimitsMiddleware, protection=self)]

    async def count(self, principal: Principal) -> None:
        """Count one request of the principal's key; :class:`TooManyRequests` past the limit."""
        retry_after = await self.limiter.hit(principal.key_id)
        if retry_after is not None:
            raise TooManyRequests(
                f"more than {self.limiter.per_minute} requests in a minute with this key",
                retry_after,
            )

    def take_slot(self, principal: Principal) -> None:
        """Take one of the key's answers in progress; :class:`TooManyRequests` when all are."""
        if not self.slots.acquire(principal.key_id):
            raise TooManyRequests(
                f"{self.slots.limit} answers are in progress with this key already", 1
            )

    def release_slot(self, principal: Principal) -> None:
        self.slots.release(principal.key_id)

    @contextmanager
    def stream_slot(self, principal: Principal) -> Iterator[None]:
        """Hold one of the key's answers in progress for the block."""
        self.take_slot(principal)
        try:
            yield
        finally:
            self.release_slot(principal)

    async def close(self) -> None:
        await self.limiter.close()


def protection_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Protection:
    found: Protection = connection.app.state.protection
    return found


class LimitsMiddleware:
    """Applies :class:`Protection`'s limits to authenticated HTTP requests."""

    def __init__(self, app: ASGIApp, protection: Protection) -> None:
        self.app = app
        self.protection = protection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("user")
        if scope["type"] != ScopeType.HTTP or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        await self.protection.count(principal)
        if scope.get("method") == "POST" and TURN_PATH.match(scope["path"]):
            with self.protection.stream_slot(principal):
                await self.app(scope, receive, send)
            return
        await self.app(scope, receive, send)


class IdleClock:
    """When a WebSocket last carried a frame either way: idle for ``limit_s``, it is closed."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    async def receive_text(self, socket: WebSocket[Any, Any, Any]) -> str | None:
        """The client's next frame; None once the socket has been idle too long."""
        while True:
            left = self.last + self.limit_s - time.monotonic()
            if left <= 0:
                return None
            try:
                text = await asyncio.wait_for(socket.receive_text(), left)
            except TimeoutError:
                continue  # a frame may have gone out meanwhile: look again
            self.touch()
            return text
