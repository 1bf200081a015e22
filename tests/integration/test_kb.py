"""The knowledge base: chunking, ingest, full-text search on SQLite and PostgreSQL, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text

from mvm_chat.cache import create_cache
from mvm_chat.chat.components import register_from
from mvm_chat.chat.services import Services
from mvm_chat.kb import chunk_markdown, chunk_text, ingest, search
from mvm_chat.kb.chunking import chunk_document, document_title
from mvm_chat.kb.search import POSTGRES_QUERY
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import load_settings
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.keys import get_or_create_tenant
from mvm_chat.store.models import KbChunk, KbDocument, Tenant
from mvm_chat.types import Passage, Turn
from tests.support import mvm

BILLING = """# Billing

Everything about paying for your account.

## Refunds

A refund reaches your card within five business days after we approve it.
Refunds for annual plans are prorated.

## Monthly fees

There is no monthly fee for the basic plan. The premium plan costs nine euros.
"""

SECURITY = """# Security

## Passwords

Reset your password from the sign-in page; the link expires after one hour.

## Two-factor authentication

Turn on two-factor authentication in your profile settings.
"""

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


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database: SQLite in ``tmp_path``, or this run's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    upgrade(url)
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """The database, its knowledge base emptied (the PostgreSQL one is shared by the run)."""
    database = Database(db_url)
    async with database.transaction() as session:
        await session.execute(delete(KbDocument))
    yield database
    await database.dispose()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    (folder / "security").mkdir(parents=True)
    (folder / "billing.md").write_text(BILLING)
    (folder / "security" / "passwords.markdown").write_text(SECURITY)
    (folder / "shipping.txt").write_text(
        "Parcels ship within two days.\n\nInternational parcels take up to three weeks.\n"
    )
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / ".hidden.md").write_text("# Hidden\n\nnot ingested\n")
    return folder


async def _tenant(db: Database, name: str) -> str:
    async with db.transaction() as session:
        return (await get_or_create_tenant(session, name)).id


async def _count(db: Database, model: type[KbDocument] | type[KbChunk]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _documents(db: Database) -> list[KbDocument]:
    async with db.session() as session:
        return list((await session.scalars(select(KbDocument).order_by(KbDocument.source))).all())


# Chunking


def test_markdown_chunks_keep_their_nearest_heading() -> None:
    chunks = chunk_markdown(BILLING)
    assert [c.heading for c in chunks] == ["Billing", "Refunds", "Monthly fees"]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert chunks[1].text.startswith("A refund reaches your card")
    assert "## " not in chunks[1].text


def test_long_sections_are_split_under_the_same_heading() -> None:
    paragraph = " ".join(f"Sentence number {i} about refunds." for i in range(200))
    doc = f"# Top\n\nintro\n\n## Long\n\n{paragraph}\n\n{'word ' * 400}\n\n{'x' * 2500}\n"
    chunks = chunk_markdown(doc, max_chars=1000)
    assert all(len(c.text) <= 1000 for c in chunks)
    assert len(chunks) > 8
    assert {c.heading for c in chunks[1:]} == {"Long"}
    joined = " ".join(c.text for c in chunks)
    assert "Sentence number 199 about refunds." in joined
    assert joined.count("x") >= 2500


def test_headings_inside_code_fences_are_text() -> None:
    doc = "# Setup\n\nRun this:\n\n```bash\n# not a heading\necho hi\n```\n\n## Next\n\nDone.\n"
    chunks = chunk_markdown(doc)
    assert [c.heading for c in chunks] == ["Setup", "Next"]
    assert "# not a heading" in chunks[0].text


def test_plain_text_is_split_by_paragraphs() -> None:
    chunks = chunk_text("First paragraph.\r\n\r\nSecond\nparagraph.\n\n\n\nThird.", max_chars=20)
    assert [c.text for c in chunks] == ["First paragraph.", "Second\nparagraph.", "Third."]
    assert all(c.heading == "" for c in chunks)
    assert chunk_document("# Not markdown here\n\ntext", "notes.txt")[0].heading == ""


def test_document_title() -> None:
    assert document_title(BILLING, "docs/billing.md") == "Billing"
    assert document_title("no heading", "docs/faq.txt") == "faq"
    assert document_title("## Only a subheading\n\ntext", "a/b/guide.md") == "guide"


# Ingest


async def test_ingest_counts_and_stores_chunks(db: Database, docs: Path) -> None:
    seen: list[tuple[str, str]] = []
    report = await ingest(db, [docs], None, on_file=lambda p, o: seen.append((p.name, o)))
    assert (report.added, report.updated, report.unchanged, report.skipped) == (3, 0, 0, [])
    assert report.summary() == "added 3, updated 0, unchanged 0, skipped 0"
    assert sorted(seen) == [
        ("billing.md", "added"),
        ("passwords.markdown", "added"),
        ("shipping.txt", "added"),
    ]
    documents = await _documents(db)
    assert [Path(d.source).name for d in documents] == [
        "billing.md",
        "passwords.markdown",
        "shipping.txt",
    ]
    assert documents[0].source == str(docs / "billing.md")
    assert documents[0].title == "Billing"
    assert all(d.tenant_id is None for d in documents)
    assert await _count(db, KbChunk) == sum(d.chunk_count for d in documents) == 3 + 2 + 1


async def test_reingesting_an_unchanged_file_does_nothing(db: Database, docs: Path) -> None:
    await ingest(db, [docs], None)
    before = await _documents(db)
    async with db.session() as session:
        chunk_ids = sorted((await session.scalars(select(KbChunk.id))).all())

    report = await ingest(db, [docs, docs / "billing.md"], None)
    assert (report.added, report.updated, report.unchanged) == (0, 0, 3)
    after = await _documents(db)
    assert [(d.id, d.content_hash, d.updated_at) for d in after] == [
        (d.id, d.content_hash, d.updated_at) for d in before
    ]
    async with db.session() as session:
        assert sorted((await session.scalars(select(KbChunk.id))).all()) == chunk_ids


async def test_a_changed_file_replaces_its_chunks(db: Database, docs: Path) -> None:
    await ingest(db, [docs], None)
    assert await search(db, "monthly fee", 3, None)
    (docs / "billing.md").write_text("# Billing\n\n## Invoices\n\nInvoices are emailed monthly.\n")

    report = await ingest(db, [docs], None)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 2)
    billing = next(d for d in await _documents(db) if d.source.endswith("billing.md"))
    assert billing.chunk_count == 1
    assert billing.updated_at > billing.created_at
    assert await search(db, "premium plan nine euros", 3, None) == []
    found = await search(db, "invoices emailed", 3, None)
    assert found[0].source == f"{docs / 'billing.md'}#Invoices"
    if db.engine.dialect.name == "sqlite":
        async with db.transaction() as session:  # raises if the FTS index is out of sync
            await session.execute(
                text("INSERT INTO kb_chunks_fts(kb_chunks_fts, rank) VALUES ('integrity-check', 1)")
            )


async def test_bad_files_are_skipped_with_a_reason_and_the_run_goes_on(
    db: Database, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_binary.md").write_bytes(b"# Title\n\x00\x01\x02 binary")
    (folder / "b_latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "c_dangling.md").symlink_to(tmp_path / "does-not-exist.md")
    (folder / "d_good.md").write_text("# Good\n\nThis one is fine.\n")
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    unreadable = tmp_path / "secret.md"
    unreadable.write_text("# Secret\n")
    unreadable.chmod(0)
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    after = tmp_path / "z_after.txt"
    after.write_text("Still ingested after the bad ones.\n")

    outcomes: list[str] = []
    report = await ingest(
        db,
        [other, tmp_path / "missing.md", fifo, folder, unreadable, after],
        None,
        on_file=lambda _p, o: outcomes.append(o),
    )
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert "binary" in reasons["a_binary.md"]
    assert "UTF-8" in reasons["b_latin1.txt"]
    assert "cannot read" in reasons["c_dangling.md"]
    assert "not a .md" in reasons["notes.csv"]
    assert "no such file" in reasons["missing.md"]
    assert "not a regular file" in reasons["pipe.md"]
    if os.geteuid() != 0:  # root reads anything
        assert "cannot read" in reasons["secret.md"]
    assert report.added == (2 if os.geteuid() != 0 else 3)
    assert sorted(Path(d.source).name for d in await _documents(db)) == sorted(
        ["d_good.md", "z_after.txt"] + (["secret.md"] if os.geteuid() == 0 else [])
    )
    assert outcomes.count("skipped") == (3 if os.geteuid() == 0 else 4)


# Search


async def test_search_ranks_the_right_chunk_first(db: Database, docs: Path) -> None:
    await ingest(db, [docs], None)
    found = await search(db, "How long does a refund take to reach my card?", 5, None)
    assert found
    assert all(isinstance(p, Passage) for p in found)
    assert found[0].source == f"{docs / 'billing.md'}#Refunds"
    assert "five business days" in found[0].text
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert all(p.score > 0 for p in found)

    password = await search(db, "I forgot my password", 5, None)
    assert password[0].source == f"{docs / 'security' / 'passwords.markdown'}#Passwords"
    parcels = await search(db, "international parcels", 5, None)
    assert parcels[0].source == str(docs / "shipping.txt")
    assert len(await search(db, "refund password parcels", 2, None)) == 2
    assert await search(db, "refund", 0, None) == []
    assert await search(db, "", 5, None) == []
    assert await search(db, "   ?!  ", 5, None) == []
    assert await search(db, "zebra xylophone", 5, None) == []


async def test_search_is_scoped_to_the_tenant_and_shared_documents(
    db: Database, tmp_path: Path
) -> None:
    acme, globex = await _tenant(db, "kb-acme"), await _tenant(db, "kb-globex")
    for name, body in [
        ("acme", "Acme warranty lasts two years."),
        ("globex", "Globex warranty lasts one year."),
        ("shared", "Every warranty claim needs a receipt."),
    ]:
        (tmp_path / f"{name}.txt").write_text(body)
    await ingest(db, [tmp_path / "acme.txt"], acme)
    await ingest(db, [tmp_path / "globex.txt"], globex)
    await ingest(db, [tmp_path / "shared.txt"], None)

    def names(passages: list[Passage]) -> set[str]:
        return {Path(p.source).stem for p in passages}

    assert names(await search(db, "warranty", 10, acme)) == {"acme", "shared"}
    assert names(await search(db, "warranty", 10, globex)) == {"globex", "shared"}
    assert names(await search(db, "warranty", 10, None)) == {"shared"}
    assert names(await search(db, "warranty", 10, "no-such-tenant")) == {"shared"}
    assert await search(db, "Globex", 10, acme) == []

    # The same path for two owners is two documents; deleting a tenant removes its own.
    report = await ingest(db, [tmp_path / "shared.txt"], acme)
    assert report.added == 1
    async with db.transaction() as session:
        await session.execute(delete(Tenant).where(Tenant.id == acme))
    assert names(await search(db, "warranty", 10, acme)) == {"shared"}
    assert await _count(db, KbDocument) == 2


async def test_hostile_queries_are_harmless(db: Database, docs: Path) -> None:
    await ingest(db, [docs], None)
    chunks = await _count(db, KbChunk)
    for query in HOSTILE:
        found = await search(db, query, 5, None)
        assert isinstance(found, list), query
    assert (await search(db, "refund*", 5, None))[0].source.endswith("#Refunds")
    assert (await search(db, "'; DROP TABLE kb_chunks; --", 5, None)) == []
    assert await _count(db, KbChunk) == chunks
    assert await _count(db, KbDocument) == 3
    assert (await search(db, "refund", 5, None))[0].source.endswith("#Refunds")


@pytest.mark.postgres
async def test_postgres_search_can_use_the_gin_index(pg_url: str, docs: Path) -> None:
    await asyncio.to_thread(upgrade, pg_url)
    db = Database(pg_url)
    try:
        await ingest(db, [docs], None)
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


async def test_the_kb_retriever_plugin(db: Database, docs: Path, tmp_path: Path) -> None:
    acme = await _tenant(db, "kb-plugin-acme")
    await ingest(db, [docs / "billing.md"], acme)
    await ingest(db, [docs / "shipping.txt"], None)
    plugins = load_plugins(only=[])
    settings = load_settings(None, environ={})
    services = Services(
        settings=settings, db=db, cache=create_cache(""), engines={}, plugins=plugins
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


# The command line


def test_cli_kb_add_on_embedded_sqlite(tmp_path: Path, docs: Path) -> None:
    env = {"MVM_CHAT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    (tmp_path / "bad.md").write_bytes(b"\x00\x00binary")
    (tmp_path / "notes.csv").write_text("a,b\n")

    first = mvm(tmp_path, "kb", "add", "docs", "bad.md", "notes.csv", env=env)
    assert first.stdout.strip().splitlines()[-1] == "added 3, updated 0, unchanged 0, skipped 2"
    assert "warning: skipped bad.md: binary file" in first.stderr
    assert "warning: skipped notes.csv: not a .md" in first.stderr
    assert "Ingesting" in first.stderr

    again = mvm(tmp_path, "kb", "add", "docs", env=env)
    assert again.stdout.strip().splitlines()[-1] == "added 0, updated 0, unchanged 3, skipped 0"
    tenant = mvm(tmp_path, "kb", "add", "docs/billing.md", "--tenant", "acme", env=env)
    assert tenant.stdout.strip().splitlines()[-1] == "added 1, updated 0, unchanged 0, skipped 0"

    listed = json.loads(mvm(tmp_path, "kb", "list", "--json", env=env).stdout)
    assert [(d["tenant"], d["source"], d["chunks"]) for d in listed] == [
        (None, "docs/billing.md", 3),
        (None, "docs/security/passwords.markdown", 2),
        (None, "docs/shipping.txt", 1),
        ("acme", "docs/billing.md", 3),
    ]
    assert "(shared)" in mvm(tmp_path, "kb", "list", env=env).stdout

    async def find() -> list[Passage]:
        database = Database(env["MVM_CHAT_DATABASE_URL"])
        try:
            return await search(database, "two-factor authentication", 3, None)
        finally:
            await database.dispose()

    found = asyncio.run(find())
    assert found[0].source == "docs/security/passwords.markdown#Two-factor authentication"
