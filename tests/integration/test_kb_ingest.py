"""Filling the knowledge base: chunking, ingest on SQLite and PostgreSQL (new, unchanged,
changed and unreadable files), and ``mvm-chat kb add`` / ``kb list``. Searching it is in
``test_kb_search.py``; the databases and documents both use are in ``conftest.py``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from sqlalchemy import select, text

from mvm_chat.kb import chunk_markdown, chunk_text, ingest, search
from mvm_chat.kb.chunking import chunk_document, document_title
from mvm_chat.store.db import Database
from mvm_chat.store.models import KbChunk, KbDocument
from mvm_chat.types import Passage
from tests.integration.conftest import KB_BILLING, kb_count
from tests.support import mvm


async def _documents(db: Database) -> list[KbDocument]:
    async with db.session() as session:
        return list((await session.scalars(select(KbDocument).order_by(KbDocument.source))).all())


# Chunking


def test_markdown_chunks_keep_their_nearest_heading() -> None:
    chunks = chunk_markdown(KB_BILLING)
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
    assert document_title(KB_BILLING, "docs/billing.md") == "Billing"
    assert document_title("no heading", "docs/faq.txt") == "faq"
    assert document_title("## Only a subheading\n\ntext", "a/b/guide.md") == "guide"


# Ingest


async def test_ingest_counts_and_stores_chunks(kb_db: Database, kb_docs: Path) -> None:
    seen: list[tuple[str, str]] = []
    report = await ingest(kb_db, [kb_docs], None, on_file=lambda p, o: seen.append((p.name, o)))
    assert (report.added, report.updated, report.unchanged, report.skipped) == (3, 0, 0, [])
    assert report.summary() == "added 3, updated 0, unchanged 0, skipped 0"
    assert sorted(seen) == [
        ("billing.md", "added"),
        ("passwords.markdown", "added"),
        ("shipping.txt", "added"),
    ]
    documents = await _documents(kb_db)
    assert [Path(d.source).name for d in documents] == [
        "billing.md",
        "passwords.markdown",
        "shipping.txt",
    ]
    assert documents[0].source == str(kb_docs / "billing.md")
    assert documents[0].title == "Billing"
    assert all(d.tenant_id is None for d in documents)
    assert await kb_count(kb_db, KbChunk) == sum(d.chunk_count for d in documents) == 3 + 2 + 1


async def test_reingesting_an_unchanged_file_does_nothing(kb_db: Database, kb_docs: Path) -> None:
    await ingest(kb_db, [kb_docs], None)
    before = await _documents(kb_db)
    async with kb_db.session() as session:
        chunk_ids = sorted((await session.scalars(select(KbChunk.id))).all())

    report = await ingest(kb_db, [kb_docs, kb_docs / "billing.md"], None)
    assert (report.added, report.updated, report.unchanged) == (0, 0, 3)
    after = await _documents(kb_db)
    assert [(d.id, d.content_hash, d.updated_at) for d in after] == [
        (d.id, d.content_hash, d.updated_at) for d in before
    ]
    async with kb_db.session() as session:
        assert sorted((await session.scalars(select(KbChunk.id))).all()) == chunk_ids


async def test_a_changed_file_replaces_its_chunks(kb_db: Database, kb_docs: Path) -> None:
    await ingest(kb_db, [kb_docs], None)
    assert await search(kb_db, "monthly fee", 3, None)
    (kb_docs / "billing.md").write_text(
        "# Billing\n\n## Invoices\n\nInvoices are emailed monthly.\n"
    )

    report = await ingest(kb_db, [kb_docs], None)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 2)
    billing = next(d for d in await _documents(kb_db) if d.source.endswith("billing.md"))
    assert billing.chunk_count == 1
    assert billing.updated_at > billing.created_at
    assert await search(kb_db, "premium plan nine euros", 3, None) == []
    found = await search(kb_db, "invoices emailed", 3, None)
    assert found[0].source == f"{kb_docs / 'billing.md'}#Invoices"
    if kb_db.engine.dialect.name == "sqlite":
        async with kb_db.transaction() as session:  # raises if the FTS index is out of sync
            await session.execute(
                text("INSERT INTO kb_chunks_fts(kb_chunks_fts, rank) VALUES ('integrity-check', 1)")
            )


async def test_bad_files_are_skipped_with_a_reason_and_the_run_goes_on(
    kb_db: Database, tmp_path: Path
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
        kb_db,
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
    assert sorted(Path(d.source).name for d in await _documents(kb_db)) == sorted(
        ["d_good.md", "z_after.txt"] + (["secret.md"] if os.geteuid() == 0 else [])
    )
    assert outcomes.count("skipped") == (3 if os.geteuid() == 0 else 4)


# The command line


def test_cli_kb_add_on_embedded_sqlite(tmp_path: Path, kb_docs: Path) -> None:
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
