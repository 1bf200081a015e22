"""Ingesting Markdown and text files into the knowledge base, one transaction per document.

A file whose content hash is already stored (for the same tenant and path) is left alone; a
changed file has its chunks replaced; an unreadable, binary or unsupported file is skipped with
a reason and the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy import delete, insert, select

from mvm_chat.kb.chunking import chunk_document, document_title
from mvm_chat.kb.files import Skipped, SourceText, UnreadableFile, find_files, read_source
from mvm_chat.store.db import Database
from mvm_chat.store.models import KbChunk, KbDocument, utcnow

Outcome = Literal["added", "updated", "unchanged", "skipped"]
OnFile = Callable[[Path, Outcome], None]

MAX_SOURCE = 1024
MAX_HEADING = 500


@dataclass(slots=True)
class IngestReport:
    """What one ingest run did, file by file."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``added N, updated N, unchanged N, skipped N``."""
        return (
            f"added {self.added}, updated {self.updated}, "
            f"unchanged {self.unchanged}, skipped {len(self.skipped)}"
        )


async def ingest(
    db: Database,
    paths: Iterable[str | os.PathLike[str]],
    tenant_id: str | None,
    on_file: OnFile | None = None,
) -> IngestReport:
    """Ingest ``paths`` (files and folders) for ``tenant_id``, or shared when it is None.

    ``on_file(path, outcome)`` is called after each file found, for a progress display.
    """
    found = find_files(paths)
    report = IngestReport(skipped=list(found.skipped))
    for path in found.files:
        outcome = await ingest_file(db, path, tenant_id, report)
        if on_file is not None:
            on_file(path, outcome)
    return report


async def ingest_file(
    db: Database, path: Path, tenant_id: str | None, report: IngestReport
) -> Outcome:
    """Ingest one file in one transaction and count it in ``report``."""
    source = str(path)
    try:
        if len(source) > MAX_SOURCE:
            raise UnreadableFile(f"path longer than {MAX_SOURCE} characters")
        content = read_source(path)
    except UnreadableFile as exc:
        report.skipped.append(Skipped(source, str(exc)))
        return "skipped"
    outcome = await _store(db, source, content, tenant_id)
    if outcome == "added":
        report.added += 1
    elif outcome == "updated":
        report.updated += 1
    else:
        report.unchanged += 1
    return outcome


async def _store(db: Database, source: str, content: SourceText, tenant_id: str | None) -> Outcome:
    chunks = chunk_document(content.text, source)
    owner = (
        KbDocument.tenant_id.is_(None) if tenant_id is None else (KbDocument.tenant_id == tenant_id)
    )
    async with db.transaction() as session:
        document = await session.scalar(
            select(KbDocument).where(owner, KbDocument.source == source).with_for_update()
        )
        if document is not None and document.content_hash == content.content_hash:
            return "unchanged"
        outcome: Outcome = "added" if document is None else "updated"
        if document is None:
            document = KbDocument(tenant_id=tenant_id, source=source)
            session.add(document)
        else:
            await session.execute(delete(KbChunk).where(KbChunk.document_id == document.id))
            document.updated_at = utcnow()
        document.title = document_title(content.text, source)[:MAX_HEADING]
        document.content_hash = content.content_hash
        document.chunk_count = len(chunks)
        await session.flush()
        if chunks:
            await session.execute(
                insert(KbChunk),
                [
                    {
                        "document_id": document.id,
                        "seq": chunk.seq,
                        "heading": chunk.heading[:MAX_HEADING],
                        "text": chunk.text,
                    }
                    for chunk in chunks
                ],
            )
    return outcome
