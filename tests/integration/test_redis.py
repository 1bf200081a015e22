"""The Redis cache backend against a real Redis, and a server that uses it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from mvm_chat.cache import RedisCache
from mvm_chat.cache.redis_client import MAX_CONNECTIONS, redis_client
from tests.support import MODEL_TOML, REDIS_UP_TIMEOUT_S, Server, free_port, redis_toml


async def test_get_set_with_prefix_and_ttl(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=redis_prefix, timeout_s=REDIS_UP_TIMEOUT_S)
    await cache.ping()
    assert await cache.get("k") is None
    await cache.set("k", b"value", ttl_s=30)
    assert await cache.get("k") == b"value"
    raw = redis.Redis.from_url(redis_url)
    assert raw.get(f"{redis_prefix}k") == b"value"
    assert 0 < raw.ttl(f"{redis_prefix}k") <= 30
    await cache.close()


async def test_a_burst_of_commands_keeps_a_bounded_pool(redis_url: str) -> None:
    """redis-py never closes idle pooled connections: the pool's bound is what keeps a burst
    from leaving open connections (and file descriptors) behind for good."""
    name = f"mvm-pool-{uuid.uuid4().hex[:8]}"
    client = redis_client(redis_url, REDIS_UP_TIMEOUT_S, client_name=name)
    assert await asyncio.gather(*(client.get("nothing") for _ in range(4 * MAX_CONNECTIONS))) == [
        None
    ] * (4 * MAX_CONNECTIONS)
    with redis.Redis.from_url(redis_url) as admin:
        ours = [c for c in admin.client_list() if c.get("name") == name]
        assert 1 < len(ours) <= MAX_CONNECTIONS
        await client.aclose()
        assert not [c for c in admin.client_list() if c.get("name") == name], "closed with it"


async def test_unreachable_redis_fails_open_fast() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    started = time.monotonic()
    assert await cache.get("k") is None
    await cache.set("k", b"v", ttl_s=5)
    assert time.monotonic() - started < 2
    with pytest.raises(RedisError):
        await cache.ping()
    await cache.close()


async def test_a_frozen_redis_is_left_alone_while_the_breaker_is_open() -> None:
    """A Redis that accepts connections and never answers: the first call times out and
    opens the cache's breaker; the calls after it do not try at all, and read as misses."""
    accepted: list[asyncio.StreamWriter] = []

    async def frozen(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(frozen, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        assert await cache.get("k") is None
        assert accepted and not cache.available
        tried = len(accepted)
        for _ in range(5):
            assert await cache.get("k") is None
            await cache.set("k", b"v", ttl_s=5)
            assert await cache.read_from("list", 0, 10) is None
        assert len(accepted) == tried, "no call reached Redis while the breaker was open"
    finally:
        await cache.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def redis_server(
    redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    config = MODEL_TOML + redis_toml(redis_url, redis_prefix)
    server = Server(tmp_path_factory.mktemp("redis-server"), config).start()
    yield server
    server.stop()


def test_server_caches_answers_in_redis(
    redis_server: Server, redis_url: str, redis_prefix: str
) -> None:
    ready = httpx.get(f"{redis_server.url}/readyz").json()
    assert ready["checks"]["cache"] == {"ok": True, "backend": "redis", "detail": ""}
    headers = {"Authorization": f"Bearer {redis_server.key('acme')}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": "Redis, are you there?"}]}
    url = f"{redis_server.url}/v1/chat/completions"
    first = httpx.post(url, json=body, headers=headers, timeout=60).json()
    second = httpx.post(url, json=body, headers=headers, timeout=60).json()
    assert (first["mvm"]["cache"], second["mvm"]["cache"]) == ("miss", "hit")
    keys = list(redis.Redis.from_url(redis_url).scan_iter(match=f"{redis_prefix}resp:*"))
    assert keys, "the answer is stored under the configured prefix"
