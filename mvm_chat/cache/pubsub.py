"""Publish/subscribe of small JSON messages: Redis across processes, or in-process fan-out.

``publish(channel, message)`` sends a dict to every current subscriber of ``channel``;
``subscribe(channel)`` gives a :class:`Subscription`, used as::

    async with pubsub.subscribe("conv:123") as messages:   # subscribed once entered
        async for message in messages:
            ...

With Redis, each process holds one subscriber connection for all its channels (channel names
get the key prefix) and one listener task that hands messages to the local subscribers. When
Redis fails, a publish is logged and delivered in-process instead, so sockets of the same
process still get it; the listener reconnects and subscribes again when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

import structlog
from redis.asyncio.client import PubSub as RedisSubscriber
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from mvm_chat.cache.redis_client import redis_client

log = structlog.get_logger(__name__)

Message = dict[str, Any]
MAX_PENDING = 1000
"""Messages a slow subscriber may have waiting; beyond that the oldest are dropped."""
LISTEN_POLL_S = 1.0
MAX_RECONNECT_DELAY_S = 5.0
HEALTH_CHECK_S = 30
_FAILURES = (RedisError, OSError)  # OSError covers TimeoutError and refused connections


def _decode(data: str | bytes) -> Message | None:
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        message = None
    if not isinstance(message, dict):
        log.warning("pubsub.bad_message")
        return None
    return message


class Subscription:
    """One subscriber's messages on one channel; an async context manager and iterator."""

    def __init__(
        self,
        channel: str,
        attach: Callable[[Subscription], Awaitable[None]],
        detach: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        self.channel = channel
        self._attach, self._detach = attach, detach
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._state = "new"

    async def open(self) -> None:
        """Start receiving (entering the context or iterating does this)."""
        if self._state == "new":
            self._state = "open"
            await self._attach(self)

    async def close(self) -> None:
        """Stop receiving; a pending iteration ends."""
        if self._state == "open":
            self._state = "closed"
            self._queue.put_nowait(None)
            await self._detach(self)
        self._state = "closed"

    def put(self, message: Message) -> None:
        """Queue ``message`` for this subscriber (called by the backend)."""
        if self._state != "open":
            return
        if self._queue.qsize() >= MAX_PENDING:
            self._queue.get_nowait()
            log.warning("pubsub.subscriber_behind", channel=self.channel)
        self._queue.put_nowait(message)

    async def __aenter__(self) -> Subscription:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        await self.open()
        if self._state == "closed" and self._queue.empty():
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        return message


class PubSub(Protocol):
    """What the app publishes and subscribes through."""

    name: str

    async def publish(self, channel: str, message: Message) -> None: ...

    def subscribe(self, channel: str) -> Subscription: ...

    async def close(self) -> None: ...


class LocalPubSub:
    """In-process fan-out: every subscriber of a channel in this process gets each message."""

    name = "memory"

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}

    async def publish(self, channel: str, message: Message) -> None:
        """Deliver ``message`` to this process's subscribers of ``channel``."""
        self.deliver(channel, json.dumps(message))

    def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``, receiving once opened."""
        return Subscription(channel, self._attach, self._detach)

    def deliver(self, channel: str, data: str | bytes) -> None:
        """Hand JSON ``data`` to each subscriber of ``channel`` (each gets its own dict)."""
        for subscription in list(self._subscribers.get(channel, ())):
            message = _decode(data)
            if message is None:
                return
            subscription.put(message)

    def add(self, subscription: Subscription) -> bool:
        """Register a subscription; True when it is the channel's first."""
        subscribers = self._subscribers.setdefault(subscription.channel, set())
        subscribers.add(subscription)
        return len(subscribers) == 1

    def remove(self, subscription: Subscription) -> bool:
        """Unregister a subscription; True when the channel has none left."""
        subscribers = self._subscribers.get(subscription.channel, set())
        subscribers.discard(subscription)
        if subscribers:
            return False
        self._subscribers.pop(subscription.channel, None)
        return True

    def channels(self) -> list[str]:
        """The channels with at least one subscriber."""
        return list(self._subscribers)

    async def _attach(self, subscription: Subscription) -> None:
        self.add(subscription)

    async def _detach(self, subscription: Subscription) -> None:
        self.remove(subscription)

    async def close(self) -> None:
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                await subscription.close()


class RedisPubSub:
    """Redis pub/sub with a key prefix and short timeouts; in-process delivery when it fails."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "mvm:", timeout_s: float = 0.25) -> None:
        self.prefix = prefix
        self._wait_s = max(1.0, 4 * timeout_s)
        self._redis = redis_client(
            url,
            timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=HEALTH_CHECK_S,  # finds a subscriber connection gone silent
        )
        self._local = LocalPubSub()
        self._subscriber: RedisSubscriber | None = None
        self._connecting = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._confirmed: dict[str, asyncio.Event] = {}

    async def publish(self, channel: str, message: Message) -> None:
        """Publish through Redis; if Redis fails, deliver to this process's subscribers."""
        data = json.dumps(message)
        try:
            await self._redis.publish(self.prefix + channel, data)
        except _FAILURES as exc:
            log.warning("pubsub.unavailable", op="publish", error=type(exc).__name__)
            self._local.deliver(channel, data)

    def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``; opening it waits (briefly) for Redis to confirm."""
        return Subscription(channel, self._attach, self._detach)

    async def _attach(self, subscription: Subscription) -> None:
        if not self._local.add(subscription):
            return
        channel = subscription.channel
        confirmed = self._confirmed[channel] = asyncio.Event()
        try:
            async with asyncio.timeout(self._wait_s):
                subscriber = await self._connected()
                await subscriber.subscribe(self.prefix + channel)
                self._start_listener()
                await confirmed.wait()
        except _FAILURES as exc:
            # Same-process messages still arrive; the listener subscribes again on reconnect.
            log.warning("pubsub.unavailable", op="subscribe", error=type(exc).__name__)
            await self._drop_connection()
            self._start_listener()

    async def _detach(self, subscription: Subscription) -> None:
        if not self._local.remove(subscription):
            return
        self._confirmed.pop(subscription.channel, None)
        if self._subscriber is None:
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await self._subscriber.unsubscribe(self.prefix + subscription.channel)
        except _FAILURES as exc:
            log.warning("pubsub.unavailable", op="unsubscribe", error=type(exc).__name__)

    async def _connected(self) -> RedisSubscriber:
        """The subscriber connection, (re)made and subscribed to every local channel."""
        async with self._connecting:
            if self._subscriber is None:
                subscriber = self._redis.pubsub()
                try:
                    await subscriber.connect()  # type: ignore[no-untyped-call]
                    channels = [self.prefix + c for c in self._local.channels()]
                    if channels:
                        await subscriber.subscribe(*channels)
                except BaseException:
                    await _close_quietly(subscriber)
                    raise
                self._subscriber = subscriber
            return self._subscriber

    async def _drop_connection(self) -> None:
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await _close_quietly(subscriber)

    def _start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="pubsub-listener")

    async def _listen(self) -> None:
        """Hand Redis messages to local subscribers; reconnect with backoff when Redis fails."""
        failures = 0
        while True:
            try:
                subscriber = await self._connected()
                message = await subscriber.get_message(timeout=LISTEN_POLL_S)
            except Exception as exc:  # a listener that dies would silence every socket
                if failures == 0:
                    log.warning("pubsub.unavailable", op="listen", error=type(exc).__name__)
                failures += 1
                await self._drop_connection()
                await asyncio.sleep(min(0.1 * 2**failures, MAX_RECONNECT_DELAY_S))
                continue
            if failures:
                log.info("pubsub.reconnected", after_failures=failures)
                failures = 0
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        raw_channel = message.get("channel")
        if not isinstance(raw_channel, bytes | str):
            return
        name = raw_channel.decode() if isinstance(raw_channel, bytes) else raw_channel
        channel = name.removeprefix(self.prefix)
        if message.get("type") == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None:
                confirmed.set()
        elif message.get("type") == "message":
            self._local.deliver(channel, message["data"])

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._drop_connection()
        await self._local.close()
        await self._redis.aclose()


async def _close_quietly(subscriber: RedisSubscriber) -> None:
    with contextlib.suppress(*_FAILURES):
        await subscriber.aclose()  # type: ignore[no-untyped-call]


def create_pubsub(url: str, prefix: str = "mvm:", timeout_s: float = 0.25) -> PubSub:
    """Redis pub/sub when ``url`` is set, otherwise in-process fan-out."""
    return RedisPubSub(url, prefix, timeout_s) if url else LocalPubSub()
