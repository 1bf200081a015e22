"""Database engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mvm_chat.errors import ConfigError
from mvm_chat.store.driver_pool import DriverPool

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
DISCONNECTED = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
"""asyncpg's failures of a connection (rather than of a statement)."""


def _prepare_sqlite_path(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


POOL_SIZE = 10
"""Postgres connections per server process in SQLAlchemy's pool (sessions, admin reads)."""
DRIVER_POOL_SIZE = 10
"""Postgres connections per server process in the hot path's pool (:class:`DriverPool`)
(:meth:`Database.driver`); with :data:`POOL_SIZE`, 20 for statements (and one more listens
for key changes, ``store/key_cache.py``)."""
POOL_TIMEOUT_S = 30
"""How long a statement waits for a free connection of either pool."""
SQLALCHEMY_ONLY = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"}
)
"""Connection options in a database URL that SQLAlchemy's asyncpg dialect takes for itself."""


_JSON = msgspec.json.Encoder()


def json_text(value: Any) -> str:
    """How a JSON column's value is written, on every path and database: msgspec's JSON
    (a few times faster than ``json.dumps``; UTF-8 rather than ``\\u`` escapes; Decimal,
    datetime and UUID as strings; a type JSON cannot hold raises ``TypeError``)."""
    return _JSON.encode(value).decode()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` (SQLite through aiosqlite or Postgres through asyncpg)."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError("database.url", f"not a database URL: {url!r}") from None
    if parsed.drivername.startswith("sqlite"):
        _prepare_sqlite_path(url)
        engine = create_async_engine(url, json_serializer=json_text)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername.startswith("postgresql"):
        # No pre-ping: it would cost a round trip per checkout. A connection found dead is
        # reported once and the pool is emptied (SQLAlchemy invalidates it on the error).
        # No overflow: an overflow connection is closed when it is returned, so under a
        # sustained load past the pool every request would open (and pay for) a new one;
        # past POOL_SIZE concurrent statements a request waits for a connection instead.
        return create_async_engine(
            url,
            pool_size=POOL_SIZE,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_S,
            pool_recycle=1800,
            json_serializer=json_text,
        )
    raise ConfigError("database.url", f"unsupported database {parsed.drivername!r}")


class Database:
    """The engine and session factory of one app instance."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._driver_pool = self._new_driver_pool()

    def _new_driver_pool(self) -> DriverPool | None:
        if not self.is_postgres:
            return None
        return DriverPool(self._connect_driver, DRIVER_POOL_SIZE, POOL_TIMEOUT_S)

    async def _connect_driver(self) -> Any:
        # the hot path sets no session state on these connections; a new user of driver()
        # must not either (no SET, advisory lock or LISTEN): they are reused as they are
        return await asyncpg.connect(**self.asyncpg_options())

    def asyncpg_options(self) -> dict[str, Any]:
        """``asyncpg.connect``'s arguments for this database (Postgres): what SQLAlchemy's
        dialect would pass, so that URL options such as ``?ssl=require`` hold here too."""
        _, options = self.engine.dialect.create_connect_args(self.engine.url)
        return {k: v for k, v in options.items() if k not in SQLALCHEMY_ONLY}

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """An autocommit connection: each statement is a transaction of its own, with no
        BEGIN / COMMIT round trips around it (a read, or a write that is one statement)."""
        async with self.autocommit.connect() as conn:
            yield conn

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """An asyncpg connection, in autocommit, from a pool of its own (Postgres only):
        for the hot path's few statements, compiled once with :func:`driver_sql`, without
        SQLAlchemy's work on each checkout and execution."""
        pool = self._driver_pool
        if pool is None:
            raise ConfigError("database.url", "the hot path's asyncpg pool needs Postgres")
        async with pool.acquire() as connection:
            try:
                yield connection
            except DISCONNECTED:
                # the others are renewed on their next use, since they are likely dead too
                # (as SQLAlchemy does with its pool)
                pool.expire()
                await self.engine.dispose()
                raise

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed together, or not at all."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def current_revision(self) -> str | None:
        def read(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def dispose(self) -> None:
        """Close every connection; the database can still be used (with new ones)."""
        pool, self._driver_pool = self._driver_pool, self._new_driver_pool()
        try:
            if pool is not None:
                await pool.close()
        finally:
            await self.engine.dispose()


def driver_sql(statement: Any, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    """``statement`` compiled for ``dialect``: its SQL and its parameters' names in the
    order the driver takes them (positional, ``$1``... on asyncpg)."""
    compiled = statement.compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ())


def alembic_config(url: str) -> Config:
    """An Alembic config for the project's migrations against ``url``."""
    if not MIGRATIONS_DIR.is_dir():
        raise ConfigError("migrations", f"migrations folder not found at {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest migration in ``migrations/``."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` (blocking; call outside a running event loop)."""
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
    command.upgrade(alembic_config(url), revision)
