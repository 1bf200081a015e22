"""The one way to open Redis: short timeouts and a bounded pool of connections."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

FAILURES = (RedisError, OSError)
"""What a failed Redis call raises (``OSError`` covers refused connections and timeouts)."""
COOLDOWN_S = 5.0
"""After a failed call, the seconds a client leaves Redis alone (its circuit breaker) and
falls back: the cache reads as a miss, limits and budgets count without it."""


class Cooldown:
    """A Redis client's circuit breaker: open for :data:`COOLDOWN_S` after a failed call."""

    def __init__(self) -> None:
        self._until = 0.0

    @property
    def open(self) -> bool:
        """True while callers should not try Redis."""
        return time.monotonic() < self._until

    def trip(self) -> None:
        self._until = time.monotonic() + COOLDOWN_S

    def reset(self) -> None:
        self._until = 0.0


MAX_CONNECTIONS = 16
"""Connections one client keeps at most. redis-py never closes an idle pooled connection, so
an unbounded pool would keep as many as the largest burst of concurrent commands ever used."""


def redis_client(url: str, timeout_s: float, **options: Any) -> aioredis.Redis:
    """A client whose commands wait at most ``timeout_s`` for a connection from the pool, to
    connect and for each reply; past that they raise a ``RedisError`` (callers fail open)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **options,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: closing it closes both
