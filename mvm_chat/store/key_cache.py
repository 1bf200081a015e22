"""The principals of keys this process has seen, forgotten whenever any key or tenant changes.

On Postgres a trigger notifies channel :data:`CHANNEL` when ``api_keys`` or ``tenants``
change (migration 0008), as the changing transaction commits; each server process listens on
a connection of its own and empties its cache on every notification. The cache is used only
while that connection is known to hear: every :data:`HEARTBEAT_S` it sends a notification to
itself (on a channel of this process alone) and waits for it, and the cache is left unused
once the last one heard is older than :data:`STALE_S` (a connection lost without a word, to a
network partition say, or one through a pooler that drops notifications). When the connection
fails, the cache is emptied and every request reads its key's row again until a new connection
listens (tried every :data:`RECONNECT_S`). A lookup that was under way when a notification
came is not kept. On SQLite (the embedded default, one process) there is no cache: each
request reads its key.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog

from mvm_chat.store.db import Database
from mvm_chat.store.keys import Principal, hash_key, principal_by_digest

log = structlog.get_logger(__name__)

CHANNEL = "mvm_api_keys"
RECONNECT_S = 1.0
HEARTBEAT_S = 2.0
STALE_S = 2 * HEARTBEAT_S
MAX_KEYS = 10_000
"""Past this many keys the cache starts over (a bound on memory, not an eviction policy)."""


class KeyCache:
    """Principals by key hash, valid while this process hears of every key change."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._principals: dict[str, Principal] = {}
        self._generation = 0
        self._listener: Any = None
        self._heard_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        """Whether key changes reach this process now (and the cache is in use)."""
        return (
            self._listener is not None
            and not self._listener.is_closed()
            and time.monotonic() - self._heard_at < STALE_S
        )

    async def start(self) -> None:
        """Listen for key changes (Postgres only); retried in the background when it fails."""
        if self.db.is_postgres and self._task is None:
            self._task = asyncio.create_task(self._keep_listening())

    async def principal(self, key: str) -> Principal | None:
        """The principal behind ``key``, or None when it is unknown or revoked."""
        digest = hash_key(key)
        if self.listening:
            found = self._principals.get(digest)
            if found is not None:
                return found
        generation = self._generation
        principal = await principal_by_digest(self.db, digest)
        # kept only if no change came while it was read, and changes are still heard
        if principal is not None and generation == self._generation and self.listening:
            if len(self._principals) >= MAX_KEYS:
                self._principals.clear()
            self._principals[digest] = principal
        return principal

    def _forget(self, *_: Any) -> None:
        self._generation += 1
        self._principals.clear()

    async def _keep_listening(self) -> None:
        options = self.db.asyncpg_options()
        while not self._closed:
            try:
                await self._listen(options)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it was, the cache is off until a new listener
                log.warning("key_cache.listen_failed", error=type(exc).__name__)
            await asyncio.sleep(RECONNECT_S)

    async def _listen(self, options: dict[str, Any]) -> None:
        """Keep the cache while one connection hears; returns when it is lost or goes deaf."""
        connection = await asyncpg.connect(**options)
        lost, echo = asyncio.Event(), asyncio.Event()
        ping = f"mvm_key_cache_{os.urandom(8).hex()}"
        connection.add_termination_listener(lambda _: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._forget)
            await connection.add_listener(ping, lambda *_: echo.set())
            self._forget()  # changes made while nobody listened
            self._listener, self._heard_at = connection, time.monotonic()
            while True:
                try:
                    await asyncio.wait_for(lost.wait(), HEARTBEAT_S)
                    break
                except TimeoutError:
                    pass
                echo.clear()
                # notifications arrive in commit order: once this one is back, every change
                # committed before it has been heard
                await connection.execute("SELECT pg_notify($1, '')", ping, timeout=HEARTBEAT_S)
                await asyncio.wait_for(echo.wait(), HEARTBEAT_S)
                self._heard_at = time.monotonic()
            log.warning("key_cache.listener_lost")
        finally:
            self._listener = None
            self._forget()
            connection.terminate()

    async def close(self) -> None:
        """Stop listening (its connection is closed as the task ends)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
