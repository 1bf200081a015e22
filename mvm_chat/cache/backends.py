"""Key-value backends with a short timeout; a failing Redis reads as a miss (fail open)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

import structlog

from mvm_chat.cache.redis_client import FAILURES, Cooldown, redis_client

log = structlog.get_logger(__name__)


class CacheBackend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def append(self, key: str, value: bytes, ttl_s: int) -> None:
        """Add ``value`` to the end of the list at ``key``; the list expires ``ttl_s`` later."""

    async def read_from(self, key: str, start: int, count: int) -> list[bytes] | None:
        """At most ``count`` items of the list at ``key`` from index ``start`` on; None when
        the backend is unreachable."""

    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    async def close(self) -> None: ...


class MemoryCache:
    """A bounded in-process LRU with expiry, for the embedded default."""

    name = "memory"

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lists: OrderedDict[str, tuple[float, list[bytes]]] = OrderedDict()
        self._max_items = max_items

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._items[key] = (time.monotonic() + ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def append(self, key: str, value: bytes, ttl_s: int) -> None:
        _, values = self._lists.pop(key, (0.0, []))
        values.append(value)
        self._lists[key] = (time.monotonic() + ttl_s, values)
        while len(self._lists) > self._max_items:
            self._lists.popitem(last=False)

    async def read_from(self, key: str, start: int, count: int) -> list[bytes] | None:
        item = self._lists.get(key)
        if item is None:
            return []
        if item[0] < time.monotonic():
            del self._lists[key]
            return []
        self._lists.move_to_end(key)
        return item[1][start : start + count]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()
        self._lists.clear()


class RedisCache:
    """Redis with a key prefix, short timeouts and a circuit breaker: after a failed call the
    cache reads as a miss, and stores nothing, for :data:`COOLDOWN_S` without trying."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "mvm:", timeout_s: float = 0.25) -> None:
        self.prefix = prefix
        self._redis = redis_client(url, timeout_s)
        self._cooldown = Cooldown()

    @property
    def available(self) -> bool:
        """False while the breaker is open (a call failed less than COOLDOWN_S ago)."""
        return not self._cooldown.open

    def _failed(self, op: str, exc: Exception) -> None:
        self._cooldown.trip()
        log.warning("cache.unavailable", op=op, error=type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            value = await self._redis.get(self.prefix + key)
        except FAILURES as exc:
            self._failed("get", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if not self.available:
            return
        try:
            await self._redis.set(self.prefix + key, value, ex=ttl_s)
        except FAILURES as exc:
            self._failed("set", exc)

    async def append(self, key: str, value: bytes, ttl_s: int) -> None:
        if not self.available:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(self.prefix + key, value)
                pipe.expire(self.prefix + key, ttl_s)
                await pipe.execute()
        except FAILURES as exc:
            self._failed("append", exc)

    async def read_from(self, key: str, start: int, count: int) -> list[bytes] | None:
        if not self.available:
            return None
        try:
            values = await self._redis.lrange(self.prefix + key, start, start + count - 1)
        except FAILURES as exc:
            self._failed("read_from", exc)
            return None
        return [v for v in values if isinstance(v, bytes)]

    async def ping(self) -> None:
        """Always tries (``/readyz`` reports what Redis says now); a success closes the
        breaker."""
        await self._redis.ping()
        self._cooldown.reset()

    async def close(self) -> None:
        await self._redis.aclose()


def create_cache(url: str, prefix: str = "mvm:", timeout_s: float = 0.25) -> CacheBackend:
    """Redis when ``url`` is set, otherwise the in-process cache."""
    return RedisCache(url, prefix, timeout_s) if url else MemoryCache()
