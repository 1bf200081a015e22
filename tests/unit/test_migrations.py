"""The migrations build exactly the schema the models describe, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from mvm_chat.store import rollups  # noqa: F401  (its table is part of the metadata)
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.models import Base


def _ours(name: str | None, kind: str, parent: object) -> bool:
    """Everything but the full-text index, which only the migrations know (an FTS5 table on
    SQLite, an expression index on Postgres)."""
    return not (name or "").startswith(("kb_chunks_fts", "ix_kb_chunks_fts"))


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": _ours})
    return list(compare_metadata(context, Base.metadata))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
    return str(request.getfixturevalue("pg_url"))


async def _compare(url: str) -> list[Any]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(_differences)
    finally:
        await db.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    upgrade(db_url)
    assert asyncio.run(_compare(db_url)) == []
