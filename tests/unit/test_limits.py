"""Per-key limits, allowed hosts, CORS origins and tenants' tiers, piece by piece."""

from __future__ import annotations

import re

import pytest

from mvm_chat.api.protection import cors_config, host_allowed, host_of
from mvm_chat.cache.ratelimit import RateLimiter, StreamSlots
from mvm_chat.chat.tenant_tiers import tenant_settings
from mvm_chat.errors import ConfigError, Forbidden
from mvm_chat.settings import (
    LimitsSettings,
    ModelSettings,
    Settings,
    TenantSettings,
    TierSettings,
    validate,
)
from tests.support import REDIS_UP_TIMEOUT_S, free_port


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_window_of_requests_then_retry_after_its_end() -> None:
    clock = Clock(6000.0 + 45)  # 15 s before the minute turns
    limiter = RateLimiter(3, clock=clock)
    assert [await limiter.hit("k") for _ in range(3)] == [None, None, None]
    assert await limiter.hit("k") == 15
    assert await limiter.hit("other") is None  # per key
    clock.now += 15
    assert await limiter.hit("k") is None  # a new window
    assert await RateLimiter(0).hit("k") is None  # 0: no limit


def _redis_limiter(per_minute: int, url: str, prefix: str) -> RateLimiter:
    """A limiter on a Redis that is up, in a minute that does not turn while the test runs."""
    return RateLimiter(per_minute, url, prefix, REDIS_UP_TIMEOUT_S, clock=Clock(6000.0))


async def test_redis_counts_for_every_process(redis_url: str, redis_prefix: str) -> None:
    one = _redis_limiter(4, redis_url, redis_prefix)
    two = _redis_limiter(4, redis_url, redis_prefix)
    try:
        results = [await (one if i % 2 else two).hit("shared-key") for i in range(6)]
        assert results[:4] == [None] * 4 and all(r is not None for r in results[4:])
        assert one.shared
    finally:
        await one.close()
        await two.close()


async def test_without_redis_each_process_still_limits(redis_url: str, redis_prefix: str) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    dead = RateLimiter(2, dead_url, redis_prefix, timeout_s=0.2, clock=Clock(6000.0))
    try:
        assert [await dead.hit("k") for _ in range(2)] == [None, None]
        assert await dead.hit("k") is not None  # never no limit
        assert not dead.shared
    finally:
        await dead.close()
    back = _redis_limiter(2, redis_url, redis_prefix + "back:")
    try:
        back.cooldown.trip()  # as just after a failure: counts locally
        assert not back.shared
        await back.hit("k")
        back.cooldown.reset()  # the cooldown is over: Redis counts again, from its own count
        assert back.shared
        assert [await back.hit("k") for _ in range(2)] == [None, None]
        assert await back.hit("k") is not None
    finally:
        await back.close()


def test_stream_slots() -> None:
    slots = StreamSlots(2)
    assert slots.acquire("k") and slots.acquire("k") and not slots.acquire("k")
    assert slots.acquire("j")
    slots.release("k")
    assert slots.acquire("k")
    assert all(StreamSlots(0).acquire("k") for _ in range(100))


@pytest.mark.parametrize(
    ("header", "allowed", "loopback", "ok"),
    [
        ("127.0.0.1:8000", [], True, True),
        ("localhost:8000", [], True, True),
        ("[::1]:8000", [], True, True),
        ("evil.example", [], True, False),  # DNS rebinding onto a loopback server
        ("evil.example:8000", [], False, True),  # off by default elsewhere
        ("", [], True, False),
        ("chat.example.com", ["chat.example.com"], True, True),  # a proxy on this machine
        ("api.example.com", ["*.example.com"], False, True),
        ("example.org", ["*.example.com"], False, False),
        ("localhost", ["chat.example.com"], False, True),
    ],
)
def test_allowed_hosts(header: str, allowed: list[str], loopback: bool, ok: bool) -> None:
    assert host_allowed(host_of(header), allowed, loopback) is ok


def test_cors_origins() -> None:
    config = cors_config(list(Settings().server.cors_origins))
    assert config is not None and config.allow_origin_regex
    pattern = re.compile(config.allow_origin_regex)
    for origin in ("http://localhost:5173", "http://127.0.0.1", "http://[::1]:3000"):
        assert pattern.fullmatch(origin), origin
    for origin in ("https://evil.example", "http://localhost.evil.example", "null"):
        assert not pattern.fullmatch(origin), origin
    assert cors_config([]) is None


def _ladder() -> Settings:
    return Settings(
        tiers=[TierSettings(name=n) for n in ("local", "gpu", "api")],
        models=[
            ModelSettings(name="small", tier="local", engine="llamacpp"),
            ModelSettings(name="big", tier="gpu", engine="sglang"),
            ModelSettings(name="paid", tier="api", engine="sglang"),
        ],
        tenants={"gpu_only": TenantSettings(allowed_tiers=["gpu"])},
    )


def test_a_tenants_settings_hold_only_its_tiers() -> None:
    settings = _ladder()
    assert tenant_settings(settings, "anyone") is settings
    mine = tenant_settings(settings, "gpu_only")
    assert [m.name for m in mine.models] == ["big"]
    assert mine.routing.default_tier == "gpu"  # the nearest allowed tier above the default
    assert tenant_settings(settings, "gpu_only", "big").models == mine.models
    with pytest.raises(Forbidden):
        tenant_settings(settings, "gpu_only", "paid")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"tenants": {"t": TenantSettings(allowed_tiers=["moon"])}}, "tenants.t.allowed_tiers"),
        ({"limits": LimitsSettings(requests_per_minute=-1)}, "limits.requests_per_minute"),
        ({"limits": LimitsSettings(max_messages=0)}, "limits.max_messages"),
        ({"limits": LimitsSettings(websocket_idle_s=0)}, "limits.websocket_idle_s"),
    ],
)
def test_bad_limits_and_tenants_name_the_key(change: dict[str, object], key: str) -> None:
    import msgspec

    with pytest.raises(ConfigError) as info:
        validate(msgspec.structs.replace(_ladder(), **change))
    assert info.value.key == key
