"""The hot path's pool of asyncpg connections: a free list, with nothing armed per checkout.

``asyncpg.Pool`` arms a timeout on every acquire and runs every release in a task of its own
(``asyncio.shield``); with one or two checkouts per request that was about 6% of a worker's CPU
under load. Here a free connection is popped from a list and pushed back; only a caller that
finds none free and may not open one waits, for at most ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]

MAX_IDLE_S = 300.0
"""A connection unused for this long is closed rather than reused (as ``asyncpg.Pool``'s
``max_inactive_connection_lifetime``): a firewall or a server may have dropped it."""


class DriverPool:
    """Up to ``size`` connections from ``connect``, opened when needed and kept for reuse.

    A connection goes back to the pool after a block that ended normally, or with a statement's
    error (``asyncpg.PostgresError``) outside a transaction, which leaves it usable. After
    anything else (a cancelled statement, a broken connection) it is terminated: its state is
    unknown.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int, timeout_s: float) -> None:
        self._connect = connect
        self.size = size
        self.timeout_s = timeout_s
        self._idle: list[tuple[Any, float]] = []
        """Free connections, with when each was given back; the newest last."""
        self._open = 0
        """Connections that exist: free, in use, or being opened."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections taken (or being opened) and not given back."""
        return self._open - len(self._idle)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A connection for the block (``TimeoutError`` when none is free in time)."""
        connection = await self._take()
        try:
            yield connection
        except asyncpg.PostgresError as exc:
            if isinstance(exc, asyncpg.PostgresConnectionError):
                self._discard(connection)
            else:
                self._give_back(connection)
            raise
        except BaseException:
            self._discard(connection)
            raise
        self._give_back(connection)

    async def _take(self) -> Any:
        deadline: float | None = None  # set when the caller first has to connect or wait
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the connection pool is closed")
            now = time.monotonic()
            while self._idle:
                connection, since = self._idle.pop()
                if now - since < MAX_IDLE_S and not connection.is_closed():
                    return connection
                self._open -= 1
                connection.terminate()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            if self._open < self.size:
                self._open += 1
                try:
                    async with asyncio.timeout_at(deadline):
                        return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken but leaving: the next waiter takes the turn
                else:
                    waiter.cancel()
                raise

    def _give_back(self, connection: Any) -> None:
        if self._closed or connection.is_closed() or connection.is_in_transaction():
            self._discard(connection)
            return
        now, idle = time.monotonic(), self._idle
        while idle and now - idle[0][1] >= MAX_IDLE_S:  # the oldest first: reuse takes the newest
            self._open -= 1
            idle.pop(0)[0].terminate()
        idle.append((connection, now))
        self._wake()

    def _discard(self, connection: Any) -> None:
        self._open -= 1
        connection.terminate()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def expire(self) -> None:
        """Close the free connections (after one was found broken, the others likely are)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for connection, _ in idle:
            connection.terminate()

    async def close(self) -> None:
        """Close the free connections; those in use are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        while self._waiters:  # each finds the pool closed
            self._wake()
        results = await asyncio.gather(
            *(connection.close(timeout=5) for connection, _ in idle), return_exceptions=True
        )
        for (connection, _), result in zip(idle, results, strict=True):
            if isinstance(result, BaseException):
                connection.terminate()
