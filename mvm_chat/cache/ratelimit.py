"""Per-key limits: requests per minute and answers in progress.

Requests are counted in fixed one-minute windows. With Redis configured the count is one
``INCR`` of ``{prefix}rl:{key_id}:{minute}`` (shared by every process); every call has the
configured short timeout, and after a failure Redis is left alone for ``COOLDOWN_S`` (a
circuit breaker) while each process counts on its own: the same limit per process, never no
limit. Answers in progress are counted per process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import structlog

from mvm_chat.cache.redis_client import FAILURES, Cooldown, redis_client

log = structlog.get_logger(__name__)

WINDOW_S = 60


class LocalWindows:
    """Fixed one-minute windows counted in this process."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}

    def hit(self, key_id: str, window: int) -> int:
        """Count one request of ``key_id`` in ``window``; returns the count so far."""
        seen_window, count = self._counts.get(key_id, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._counts[key_id] = (window, count)
        if len(self._counts) > 10_000:  # forget keys idle since an earlier window
            self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
        return count


class RateLimiter:
    """``per_minute`` requests per key (0: no limit); Redis when ``url`` is set."""

    def __init__(
        self,
        per_minute: int,
        url: str = "",
        prefix: str = "mvm:",
        timeout_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self.prefix = prefix
        self.clock = clock
        self.local = LocalWindows()
        self._redis = redis_client(url, timeout_s) if url and per_minute else None
        self.cooldown = Cooldown()

    @property
    def shared(self) -> bool:
        """Whether the count is Redis's right now (not this process's own)."""
        return self._redis is not None and not self.cooldown.open

    async def hit(self, key_id: str) -> int | None:
        """Count a request of ``key_id``: None when it is within the limit, else the seconds
        until the window ends (for ``Retry-After``)."""
        if not self.per_minute:
            return None
        now = self.clock()
        window = int(now // WINDOW_S)
        count = await self._count(key_id, window)
        if count <= self.per_minute:
            return None
        return max(1, math.ceil((window + 1) * WINDOW_S - now))

    async def _count(self, key_id: str, window: int) -> int:
        if self._redis is None or self.cooldown.open:
            return self.local.hit(key_id, window)
        name = f"{self.prefix}rl:{key_id}:{window}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, WINDOW_S * 2)
                count, _ = await pipe.execute()
            return int(count)
        except FAILURES as exc:
            self.cooldown.trip()
            log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
            return self.local.hit(key_id, window)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


class StreamSlots:
    """Answers in progress per key in this process, at most ``limit`` each (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, key_id: str) -> bool:
        if not self.limit:
            return True
        held = self._held.get(key_id, 0)
        if held >= self.limit:
            return False
        self._held[key_id] = held + 1
        return True

    def release(self, key_id: str) -> None:
        if not self.limit:
            return
        held = self._held.get(key_id, 0) - 1
        if held > 0:
            self._held[key_id] = held
        else:
            self._held.pop(key_id, None)

    def held(self, key_id: str) -> int:
        return self._held.get(key_id, 0)
