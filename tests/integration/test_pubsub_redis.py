"""Redis pub/sub between two backends (two processes' worth), and recovery when Redis restarts."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mvm_chat.cache.pubsub import RedisPubSub, Subscription
from tests.support import REDIS_UP_TIMEOUT_S, free_port, unavailable

pytestmark = pytest.mark.redis


async def _next(messages: Subscription, timeout_s: float = 30.0) -> dict[str, Any]:
    return await asyncio.wait_for(anext(messages), timeout_s)


def _subscribers(url: str, channel: str) -> int:
    [(_, count)] = redis.Redis.from_url(url).pubsub_numsub(channel)
    return int(count)


async def test_a_message_reaches_the_other_backend_once(redis_url: str, redis_prefix: str) -> None:
    a, b = (RedisPubSub(redis_url, redis_prefix, REDIS_UP_TIMEOUT_S) for _ in range(2))
    try:
        async with a.subscribe("conv:x") as on_a, a.subscribe("conv:x") as again_on_a:
            # one Redis subscription per process and channel, under the key prefix
            assert _subscribers(redis_url, f"{redis_prefix}conv:x") == 1
            await b.publish("conv:x", {"type": "agent_message", "content": "from b"})
            assert await _next(on_a) == {"type": "agent_message", "content": "from b"}
            assert await _next(again_on_a) == {"type": "agent_message", "content": "from b"}
            await a.publish("conv:x", {"n": 2})
            assert await _next(on_a) == {"n": 2}
            with pytest.raises(TimeoutError):
                await _next(on_a, 0.3)  # delivered through Redis only, not also in-process
        assert _subscribers(redis_url, f"{redis_prefix}conv:x") == 0
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def private_redis() -> Iterator[tuple[str, Any]]:
    """A Redis server of this test's own, which it may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    port = free_port()
    command = [str(binary), "--port", str(port), "--save", "", "--appendonly", "no"]
    url = f"redis://127.0.0.1:{port}/0"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(url, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(timeout=10)

    start()
    yield url, (start, stop)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


async def test_subscribers_recover_when_redis_comes_back(
    private_redis: tuple[str, Any],
) -> None:
    url, (start, stop) = private_redis
    a, b = (RedisPubSub(url, "t:", REDIS_UP_TIMEOUT_S) for _ in range(2))
    try:
        async with a.subscribe("conv:y") as on_a:
            await b.publish("conv:y", {"n": 1})
            assert await _next(on_a) == {"n": 1}

            stop()
            await a.publish("conv:y", {"n": 2})  # Redis is gone: delivered in-process
            assert await _next(on_a) == {"n": 2}

            start()
            deadline = time.monotonic() + 20
            received: dict[str, Any] | None = None
            while received is None and time.monotonic() < deadline:
                await b.publish("conv:y", {"n": 3})
                try:
                    received = await _next(on_a, 0.5)
                except TimeoutError:
                    continue
            assert received == {"n": 3}, "the listener subscribed again after the restart"
    finally:
        await a.close()
        await b.close()
