"""The hot path's asyncpg pool (``store/driver_pool.py``) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from mvm_chat.store.db import Database
from mvm_chat.store.driver_pool import DriverPool

pytestmark = pytest.mark.postgres


async def until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (30 s at most)."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[DriverPool]:
    database = Database(pg_url)
    pool = DriverPool(database._connect_driver, size=2, timeout_s=0.5)
    yield pool
    await pool.close()
    await database.dispose()


async def test_a_connection_is_reused(pool: DriverPool) -> None:
    async with pool.acquire() as first:
        assert await first.fetchval("SELECT 1") == 1
    async with pool.acquire() as second:
        assert second is first
    assert pool.in_use == 0


async def test_at_most_size_connections_then_a_caller_waits(pool: DriverPool) -> None:
    release = asyncio.Event()

    async def hold() -> Any:
        async with pool.acquire() as connection:
            await release.wait()
            return connection

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await until(lambda: pool.in_use == 2)
    third = asyncio.create_task(hold())
    await asyncio.sleep(0.05)
    assert not third.done() and pool.in_use == 2  # no third connection was opened
    release.set()
    connections = await asyncio.gather(*holders, third)
    assert connections[2] in connections[:2]  # the waiter got one given back
    assert pool.in_use == 0


async def test_no_free_connection_in_time_is_a_timeout(pool: DriverPool) -> None:
    async with pool.acquire(), pool.acquire():
        with pytest.raises(TimeoutError):
            async with pool.acquire():
                pass
    assert pool.in_use == 0  # a waiter that gave up leaves nothing behind
    async with pool.acquire() as first, pool.acquire() as second:
        assert await first.fetchval("SELECT 2") == await second.fetchval("SELECT 2") == 2


async def test_a_statement_error_keeps_the_connection(pool: DriverPool) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with pool.acquire() as first:
            await first.fetchval("SELECT 1 / 0")
    async with pool.acquire() as second:
        assert second is first and await second.fetchval("SELECT 3") == 3


async def test_a_cancelled_statement_drops_the_connection(pool: DriverPool) -> None:
    started = asyncio.Event()
    seen: list[Any] = []

    async def slow() -> None:
        async with pool.acquire() as connection:
            seen.append(connection)
            started.set()
            await connection.fetchval("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[0].is_closed() and pool.in_use == 0
    async with pool.acquire() as fresh:
        assert fresh is not seen[0] and await fresh.fetchval("SELECT 4") == 4


async def test_a_broken_connection_is_dropped(pool: DriverPool, pg_url: str) -> None:
    broken = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)
    # asyncpg reports a backend that is gone in more than one way, depending on timing
    with pytest.raises((*broken, asyncpg.exceptions.InternalClientError)):
        async with pool.acquire() as doomed:
            pid = await doomed.fetchval("SELECT pg_backend_pid()")
            async with pool.acquire() as other:
                await other.fetchval("SELECT pg_terminate_backend($1)", pid)
            await doomed.fetchval("SELECT 5")
    assert doomed.is_closed() and pool.in_use == 0
    async with pool.acquire() as fresh:
        assert fresh is not doomed and await fresh.fetchval("SELECT 6") == 6


async def test_a_failed_connect_gives_its_place_back(pool: DriverPool) -> None:
    async def refused() -> Any:
        raise OSError("connection refused")

    real, pool._connect = pool._connect, refused
    with pytest.raises(OSError):
        async with pool.acquire():
            pass
    pool._connect = real
    assert pool.in_use == 0
    async with pool.acquire() as first, pool.acquire() as second:  # both places are there
        assert first is not second


async def test_closing_ends_the_waiters_and_closes_the_free_connections(
    pool: DriverPool,
) -> None:
    async with pool.acquire() as taken_later, pool.acquire() as stays_free:
        pass  # given back in turn: stays_free, then taken_later (the newest, reused first)
    release = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire():
            await release.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: pool.in_use == 1)
    await pool.close()
    assert stays_free.is_closed() and not taken_later.is_closed()
    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        await hold()
    release.set()
    await holder
    assert taken_later.is_closed() and pool.in_use == 0
