"""Shared fixtures: real PostgreSQL and Redis, and real server processes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support import MODEL_TOML, Server, unavailable

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


async def _pg_exec(admin_url: str, *statements: str) -> None:
    import asyncpg

    url = make_url(admin_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
        timeout=5,
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for each test module (asyncpg URL), dropped at its end."""
    admin = os.environ.get("MVM_CHAT_TEST_DATABASE_URL", DEFAULT_PG)
    admin = admin.replace("postgresql+asyncpg://", "postgresql://")
    name = f"mvm_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_exec(admin, f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        unavailable(f"PostgreSQL not reachable at {admin}: {exc}")
    url = make_url(admin).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    asyncio.run(_pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("MVM_CHAT_TEST_REDIS_URL", DEFAULT_REDIS)
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception as exc:
        unavailable(f"Redis not reachable at {url}: {exc}")
    return url


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this run's own; its keys are deleted at the end."""
    import redis

    prefix = f"mvm-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(url=redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded default (SQLite, in-process cache, SmolLM2) as a real server process."""
    server = Server(tmp_path_factory.mktemp("sqlite-server"), MODEL_TOML).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client_key(sqlite_server: Server) -> str:
    return sqlite_server.key("acme")


@pytest.fixture(scope="session")
def other_key(sqlite_server: Server) -> str:
    return sqlite_server.key("globex")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
