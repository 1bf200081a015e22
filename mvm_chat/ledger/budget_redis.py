"""Budget counters in Redis: one hash per tenant and month, changed only by Lua scripts.

The hash ``{prefix}budget:{tenant_id}:{YYYY-MM}`` holds ``spent`` and ``reserved`` in whole
nano-dollars. A reservation is one script (check and increment together, so concurrent
callers on any number of processes cannot both take the last of a budget); a hash that is
absent is first set from the database's spend inside the same script. A hash idle for
:data:`IDLE_TTL_S` expires and is set afresh from the database on its next use, which also
drops reservations of a process that died mid-call.

Every call has the configured short timeout; after a failure the counters report
:class:`CountersUnavailable` for ``COOLDOWN_S`` without trying (a circuit breaker), and the
caller falls back to the database. A settlement that could not reach Redis marks the hash
stale: it is deleted (and so set afresh from the database) once Redis answers again.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import structlog

from mvm_chat.cache.redis_client import FAILURES, Cooldown, redis_client

log = structlog.get_logger(__name__)

IDLE_TTL_S = 3600
NANOS_PER_USD = Decimal(1_000_000_000)

_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[4] == '' then return -1 end
  redis.call('HSET', KEYS[1], 'spent', ARGV[4], 'reserved', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if spent + reserved + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
return 1
"""

_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1]) < 0 then
  redis.call('HSET', KEYS[1], 'reserved', 0)
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_SET_SPENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1])
return 1
"""


class CountersUnavailable(Exception):
    """Redis did not answer (or did recently not): use the database."""


def to_nanos(amount: Decimal, round_up: bool = False) -> int:
    """An amount in whole nano-dollars (reservations round up, costs are exact already)."""
    scaled = amount * NANOS_PER_USD
    return int(scaled.to_integral_value(rounding=ROUND_CEILING) if round_up else scaled)


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


class RedisBudgetCounters:
    """The per tenant-month counters in Redis, with a short timeout and a circuit breaker."""

    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        self.prefix = prefix
        self._redis = redis_client(url, timeout_s)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._set_spent = self._redis.register_script(_SET_SPENT)
        self._cooldown = Cooldown()
        self._stale: set[str] = set()

    def key(self, tenant_id: str, month: str) -> str:
        return f"{self.prefix}budget:{tenant_id}:{month}"

    def _check(self) -> None:
        if self._cooldown.open:
            raise CountersUnavailable("redis failed recently")

    def _failed(self, op: str, exc: Exception) -> CountersUnavailable:
        self._cooldown.trip()
        log.warning("budget.redis_unavailable", op=op, error=type(exc).__name__)
        return CountersUnavailable(f"redis: {type(exc).__name__}")

    async def reserve(
        self, tenant_id: str, month: str, amount: int, budget: int, spent: int | None = None
    ) -> bool | None:
        """Reserve ``amount`` nano-dollars within ``budget``: True or False, or None when the
        hash is absent and ``spent`` (the database's spend to start from) was not given."""
        self._check()
        key = self.key(tenant_id, month)
        try:
            if key in self._stale:
                await self._redis.delete(key)
                self._stale.discard(key)
            outcome = await self._reserve(
                keys=[key], args=[amount, budget, IDLE_TTL_S, "" if spent is None else spent]
            )
        except FAILURES as exc:
            raise self._failed("reserve", exc) from None
        return None if int(outcome) < 0 else bool(int(outcome))

    async def settle(self, tenant_id: str, month: str, released: int, cost: int) -> None:
        """Release ``released`` and add ``cost`` (nano-dollars); never raises."""
        key = self.key(tenant_id, month)
        try:
            self._check()
            await self._settle(keys=[key], args=[-released, cost, IDLE_TTL_S])
        except (CountersUnavailable, *FAILURES) as exc:
            self._stale.add(key)
            if not isinstance(exc, CountersUnavailable):
                self._failed("settle", exc)

    async def set_spent(self, tenant_id: str, month: str, spent: int) -> None:
        """Replace the spend of an existing hash (its reservations stay); never raises."""
        key = self.key(tenant_id, month)
        try:
            self._check()
            await self._set_spent(keys=[key], args=[spent])
        except (CountersUnavailable, *FAILURES) as exc:
            self._stale.add(key)
            if not isinstance(exc, CountersUnavailable):
                self._failed("set_spent", exc)

    async def reserved(self, tenant_id: str, month: str) -> int | None:
        """The nano-dollars reserved now, or None when unknown (no hash, or no Redis)."""
        try:
            self._check()
            value = await self._redis.hget(self.key(tenant_id, month), "reserved")
        except (CountersUnavailable, *FAILURES):
            return None
        return None if value is None else int(value)

    async def close(self) -> None:
        await self._redis.aclose()
