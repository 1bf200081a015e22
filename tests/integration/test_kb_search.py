"""Searching the knowledge base on SQLite and PostgreSQL: ranking, the tenant's scope, hostile
queries, the PostgreSQL index, and the built-in retriever plugin. Filling it is in
``test_kb_ingest.py``; the databases and documents both use are in ``conftest.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import delete, text

from mvm_chat.cache import create_cache
from mvm_chat.chat.components import register_from
from mvm_chat.chat.services import Services
from mvm_chat.kb import ingest, search
from mvm_chat.kb.search import POSTGRES_QUERY
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import load_settings
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.keys import get_or_create_tenant
from mvm_chat.store.models import KbChunk, KbDocument, Tenant
from mvm_chat.types import Passage, Turn
from tests.integration.conftest import kb_count

HOSTILE = [
    '"',
    "'",
    '"unbalanced quote',
    "refund*",
    "*",
    "NEAR(refund card",
    "NEAR(",
    "refund AND OR NOT",
    "(((",
    "col:refund",
    "heading:Refunds",
    "^refund",
    "'; DROP TABLE kb_chunks; --",
    '"); DROP TABLE kb_documents; --',
    "refund -fee",
    "!!! ??? ...",
    "the and of a",
    "\x00\x01 refund",
    "refund " * 5000,
    "x" * 100_000,
]


async def _tenant(db: Database, name: str) -> str:
    async with db.transaction() as session:
        return (await get_or_create_tenant(session, name)).id


# Search


async def test_search_ranks_the_right_chunk_first(kb_db: Database, kb_docs: Path) -> None:
    await ingest(kb_db, [kb_docs], None)
    found = await search(kb_db, "How long does a refund take to reach my card?", 5, None)
    assert found
    assert all(isinstance(p, Passage) for p in found)
    assert found[0].source == f"{kb_docs / 'billing.md'}#Refunds"
    assert "five business days" in found[0].text
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert all(p.score > 0 for p in found)

    password = await search(kb_db, "I forgot my password", 5, None)
    assert password[0].source == f"{kb_docs / 'security' / 'passwords.markdown'}#Passwords"
    parcels = await search(kb_db, "international parcels", 5, None)
    assert parcels[0].source == str(kb_docs / "shipping.txt")
    assert len(await search(kb_db, "refund password parcels", 2, None)) == 2
    assert await search(kb_db, "refund", 0, None) == []
    assert await search(kb_db, "", 5, None) == []
    assert await search(kb_db, "   ?!  ", 5, None) == []
    assert await search(kb_db, "zebra xylophone", 5, None) == []


async def test_search_is_scoped_to_the_tenant_and_shared_documents(
    kb_db: Database, tmp_path: Path
) -> None:
    acme, globex = await _tenant(kb_db, "kb-acme"), await _tenant(kb_db, "kb-globex")
    for name, body in [
        ("acme", "Acme warranty lasts two years."),
        ("globex", "Globex warranty lasts one year."),
        ("shared", "Every warranty claim needs a receipt."),
    ]:
        (tmp_path / f"{name}.txt").write_text(body)
    await ingest(kb_db, [tmp_path / "acme.txt"], acme)
    await ingest(kb_db, [tmp_path / "globex.txt"], globex)
    await ingest(kb_db, [tmp_path / "shared.txt"], None)

    def names(passages: list[Passage]) -> set[str]:
        return {Path(p.source).stem for p in passages}

    assert names(await search(kb_db, "warranty", 10, acme)) == {"acme", "shared"}
    assert names(await search(kb_db, "warranty", 10, globex)) == {"globex", "shared"}
    assert names(await search(kb_db, "warranty", 10, None)) == {"shared"}
    assert names(await search(kb_db, "warranty", 10, "no-such-tenant")) == {"shared"}
    assert await search(kb_db, "Globex", 10, acme) == []

    # The same path for two owners is two documents; deleting a tenant removes its own.
    report = await ingest(kb_db, [tmp_path / "shared.txt"], acme)
    assert report.added == 1
    async with kb_db.transaction() as session:
        await session.execute(delete(Tenant).where(Tenant.id == acme))
    assert names(await search(kb_db, "warranty", 10, acme)) == {"shared"}
    assert await kb_count(kb_db, KbDocument) == 2


async def test_hostile_queries_are_harmless(kb_db: Database, kb_docs: Path) -> None:
    await ingest(kb_db, [kb_docs], None)
    chunks = await kb_count(kb_db, KbChunk)
    for query in HOSTILE:
        found = await search(kb_db, query, 5, None)
        assert isinstance(found, list), query
    assert (await search(kb_db, "refund*", 5, None))[0].source.endswith("#Refunds")
    assert (await search(kb_db, "'; DROP TABLE kb_chunks; --", 5, None)) == []
    assert await kb_count(kb_db, KbChunk) == chunks
    assert await kb_count(kb_db, KbDocument) == 3
    assert (await search(kb_db, "refund", 5, None))[0].source.endswith("#Refunds")


@pytest.mark.postgres
async def test_postgres_search_can_use_the_gin_index(pg_url: str, kb_docs: Path) -> None:
    await asyncio.to_thread(upgrade, pg_url)
    db = Database(pg_url)
    try:
        await ingest(db, [kb_docs], None)
        async with db.transaction() as session:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            await session.execute(text("SET LOCAL enable_nestloop = off"))
            plan = (
                await session.execute(
                    text("EXPLAIN " + POSTGRES_QUERY.text),
                    {"query": "refund", "tenant_id": None, "limit": 3},
                )
            ).scalars()
            assert "ix_kb_chunks_fts" in "\n".join(plan)
    finally:
        await db.dispose()


# The built-in retriever plugin


async def test_the_kb_retriever_plugin(kb_db: Database, kb_docs: Path, tmp_path: Path) -> None:
    acme = await _tenant(kb_db, "kb-plugin-acme")
    await ingest(kb_db, [kb_docs / "billing.md"], acme)
    await ingest(kb_db, [kb_docs / "shipping.txt"], None)
    plugins = load_plugins(only=[])
    settings = load_settings(None, environ={})
    services = Services(
        settings=settings, db=kb_db, cache=create_cache(""), engines={}, plugins=plugins
    )

    [component] = register_from(plugins, "retriever", settings, services)
    assert (component.plugin, component.name) == ("kb_search", "kb")
    turn = Turn(
        "when is my refund paid back?", "c1", "kb-plugin-acme", metadata={"tenant_id": acme}
    )
    passages = await component.obj.retrieve(turn, 3)
    assert passages[0].source.endswith("billing.md#Refunds")
    anonymous = Turn("refund parcels", "c2", "other")
    assert {Path(p.source).name for p in await component.obj.retrieve(anonymous, 3)} == {
        "shipping.txt"
    }

    assert register_from(plugins, "retriever", settings, None) == []
    config = tmp_path / "off.toml"
    config.write_text("[plugins.kb_search]\nenabled = false\n")
    disabled = load_settings(config, environ={})
    assert register_from(plugins, "retriever", disabled, services) == []
