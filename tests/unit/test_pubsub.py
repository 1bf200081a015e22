"""In-process pub/sub, and the Redis backend's fallback to it when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import time

import pytest

from mvm_chat.cache.pubsub import LocalPubSub, PubSub, RedisPubSub, create_pubsub
from tests.support import free_port


async def test_local_fan_out_to_every_subscriber_of_the_channel() -> None:
    pubsub = LocalPubSub()
    async with (
        pubsub.subscribe("conv:a") as first,
        pubsub.subscribe("conv:a") as second,
        pubsub.subscribe("conv:b") as other,
    ):
        await pubsub.publish("conv:a", {"type": "agent_message", "n": 1})
        received = await asyncio.wait_for(anext(first), 30)
        assert received == {"type": "agent_message", "n": 1}
        received["n"] = 2  # each subscriber has its own copy
        assert await asyncio.wait_for(anext(second), 30) == {"type": "agent_message", "n": 1}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(other), 0.05)
    await pubsub.publish("conv:a", {"after": "close"})  # no subscribers left: dropped
    assert pubsub.channels() == []


async def test_closing_a_subscription_ends_its_iteration() -> None:
    pubsub = LocalPubSub()
    subscription = pubsub.subscribe("conv:a")
    await subscription.open()

    async def collect() -> list[dict[str, object]]:
        return [message async for message in subscription]

    task = asyncio.create_task(collect())
    await pubsub.publish("conv:a", {"n": 1})
    await asyncio.sleep(0)
    await subscription.close()
    assert await asyncio.wait_for(task, 30) == [{"n": 1}]


async def test_messages_must_be_json() -> None:
    pubsub = LocalPubSub()
    with pytest.raises(TypeError):
        await pubsub.publish("conv:a", {"when": object()})


def test_backend_follows_the_redis_url() -> None:
    assert isinstance(create_pubsub(""), LocalPubSub)
    assert isinstance(create_pubsub("redis://127.0.0.1:1/0"), RedisPubSub)


async def test_unreachable_redis_falls_back_to_in_process_delivery_fast() -> None:
    pubsub: PubSub = RedisPubSub(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    started = time.monotonic()
    try:
        async with pubsub.subscribe("conv:a") as messages:
            await pubsub.publish("conv:a", {"type": "agent_message", "content": "hi"})
            received = await asyncio.wait_for(anext(messages), 2)
        assert received == {"type": "agent_message", "content": "hi"}
        assert time.monotonic() - started < 3
    finally:
        await pubsub.close()
