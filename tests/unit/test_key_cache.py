"""The per-process key cache (``store/key_cache.py``) on a real Postgres: a key's row is read
once while key changes are heard, and a change by any means (plain SQL included) empties it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from mvm_chat.store import key_cache
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.key_cache import KeyCache
from mvm_chat.store.keys import Principal, create_key


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in 30 s"
        await asyncio.sleep(0.01)


async def _next_heartbeat(cache: KeyCache) -> None:
    """Wait until the listener hears its next heartbeat (or a new listener starts)."""
    heard = cache._heard_at
    await _until(lambda: cache._heard_at > heard)


async def _between_heartbeats(cache: KeyCache, statement: str) -> Any:
    """Run ``statement`` on the listener's connection just after a heartbeat; returns that
    connection. Should the next heartbeat start first (a slow machine), the connection refuses
    a second operation: then it is tried after the one after."""
    for _ in range(10):
        await _next_heartbeat(cache)
        listener = cache._listener
        try:
            await listener.execute(statement)
            return listener
        except asyncpg.InterfaceError:  # another operation is in progress
            continue
    raise AssertionError(f"no time between heartbeats for {statement!r}")


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, pg_url)
    database = Database(pg_url)
    yield database
    await database.dispose()


@pytest.fixture
async def cache(db: Database) -> AsyncIterator[KeyCache]:
    keys = KeyCache(db)
    await keys.start()
    await _until(lambda: keys.listening)
    yield keys
    await keys.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digests the cache read from the database (the real lookup, counted)."""
    seen: list[str] = []
    real = key_cache.principal_by_digest

    async def counted(db: Database, digest: str) -> Principal | None:
        seen.append(digest)
        return await real(db, digest)

    monkeypatch.setattr(key_cache, "principal_by_digest", counted)
    return seen


async def _key(db: Database, role: str = "client") -> str:
    async with db.transaction() as session:
        return (await create_key(session, "acme", role))[1]


async def _sql(db: Database, statement: str) -> None:
    async with db.transaction() as session:
        await session.execute(text(statement))


async def test_a_key_is_read_once_while_changes_are_heard(
    db: Database, cache: KeyCache, reads: list[str]
) -> None:
    key = await _key(db)
    principals = [await cache.principal(key) for _ in range(5)]
    assert principals[0] is not None and principals[0].role == "client"
    assert principals == [principals[0]] * 5
    assert len(reads) == 1
    assert await cache.principal(key + "x") is None  # unknown keys are never kept
    assert await cache.principal(key + "x") is None
    assert len(reads) == 3


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE api_keys SET revoked_at = now()",
        "DELETE FROM api_keys",
        "UPDATE tenants SET name = 'renamed'",
    ],
)
async def test_a_change_by_plain_sql_empties_the_cache(
    db: Database, cache: KeyCache, change: str
) -> None:
    key = await _key(db)
    before = await cache.principal(key)
    assert before is not None and before.tenant == "acme"
    await _sql(db, change)
    await _until(lambda: not cache._principals)
    after = await cache.principal(key)
    assert after is None or after.tenant == "renamed"


async def test_a_lookup_under_way_when_a_key_changes_is_not_kept(
    db: Database, cache: KeyCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await _key(db)
    real = key_cache.principal_by_digest

    async def revoked_meanwhile(database: Database, digest: str) -> Principal | None:
        found = await real(database, digest)  # read while the key was still valid
        generation = cache._generation
        await _sql(db, "UPDATE api_keys SET revoked_at = now()")
        await _until(lambda: cache._generation != generation)
        return found

    monkeypatch.setattr(key_cache, "principal_by_digest", revoked_meanwhile)
    assert await cache.principal(key) is not None
    monkeypatch.setattr(key_cache, "principal_by_digest", real)
    assert await cache.principal(key) is None


async def test_while_the_listener_is_down_every_request_reads_its_key(
    db: Database, cache: KeyCache, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_cache, "RECONNECT_S", 3.0)  # down for the whole check
    key = await _key(db)
    assert await cache.principal(key) is not None
    pid = cache._listener.get_server_pid()
    await _sql(db, f"SELECT pg_terminate_backend({pid})")
    await _until(lambda: not cache.listening)
    await _sql(db, "UPDATE api_keys SET revoked_at = now()")  # heard by nobody
    assert await cache.principal(key) is None
    await _sql(db, "UPDATE api_keys SET revoked_at = NULL")
    assert await cache.principal(key) is not None
    await _until(lambda: cache.listening)  # back after key_cache.RECONNECT_S
    assert await cache.principal(key) is not None
    count = len(reads)
    assert await cache.principal(key) is not None
    assert len(reads) == count  # cached again


async def test_sqlite_keeps_no_cache(tmp_path: Path, reads: list[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    keys = KeyCache(db)
    try:
        await keys.start()
        key = await _key(db)
        for _ in range(3):
            assert await keys.principal(key) is not None
        assert not keys.listening and len(reads) == 3
    finally:
        await keys.close()
        await db.dispose()


async def test_heartbeats_keep_the_cache_in_use(
    cache: KeyCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_cache, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(key_cache, "STALE_S", 0.5)
    await _next_heartbeat(cache)  # a heartbeat came back
    heard = cache._heard_at
    # and another, with the cache in use: checked together, as a slow machine may pause
    # longer than STALE_S between the two checks
    await _until(lambda: cache._heard_at > heard and cache.listening)


async def test_a_listener_that_stops_hearing_leaves_the_cache_unused(
    db: Database, cache: KeyCache, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await _key(db)
    assert await cache.principal(key) is not None
    monkeypatch.setattr(key_cache, "HEARTBEAT_S", 0.3)
    monkeypatch.setattr(key_cache, "STALE_S", 0.6)
    # deaf but connected, as behind a pooler that drops notifications: nothing is heard now
    listener = await _between_heartbeats(cache, "UNLISTEN *")
    await _sql(db, "UPDATE api_keys SET revoked_at = now()")
    await _until(lambda: not cache.listening)  # its heartbeat did not come back
    assert await cache.principal(key) is None
    await _until(lambda: cache.listening and cache._listener is not listener)  # a new one
    assert await cache.principal(key) is None
