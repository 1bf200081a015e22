"""``mvm-chat kb``: fill and list the knowledge base that the built-in ``kb`` retriever searches.

The shared command-line helpers are imported from ``mvm_chat.cli`` when a command runs (that
module adds this group to ``cli`` as it finishes loading, so importing it at the top would be
an import circle).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mvm_chat.kb import IngestReport, find_files, ingest, list_documents
from mvm_chat.kb.documents import DocumentInfo
from mvm_chat.settings import Settings
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.keys import get_or_create_tenant

if TYPE_CHECKING:
    from mvm_chat.cli import Context


def _ready(settings: Settings) -> None:
    """Migrate an embedded SQLite database; a server database must already be migrated."""
    from mvm_chat.cli import database_errors

    if settings.database.is_sqlite:
        with database_errors():
            upgrade(settings.database.url)


async def _open(settings: Settings) -> Database:
    from mvm_chat.app import check_migrated

    db = Database(settings.database.url)
    try:
        await check_migrated(db)
    except BaseException:
        await db.dispose()
        raise
    return db


async def _tenant_id(db: Database, name: str) -> str:
    async with db.transaction() as session:
        return (await get_or_create_tenant(session, name)).id


@click.group()
def kb() -> None:
    """Knowledge base: documents for full-text retrieval."""


@kb.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--tenant",
    default=None,
    help="Tenant name (created if needed). Default: shared by every tenant.",
)
@click.pass_obj
def kb_add(ctx: Context, paths: tuple[str, ...], tenant: str | None) -> None:
    """Ingest Markdown and text files; folders are searched for *.md, *.markdown and *.txt.

    Unchanged files are left alone, changed ones replaced; unreadable or binary files are
    skipped with a warning.
    """
    from mvm_chat.cli import run

    settings = ctx.settings
    _ready(settings)
    found = find_files(paths)

    async def add() -> IngestReport:
        db = await _open(settings)
        try:
            tenant_id = await _tenant_id(db, tenant) if tenant is not None else None
            with click.progressbar(
                length=len(found.files), label="Ingesting", file=sys.stderr
            ) as bar:

                def advance(_path: Path, _outcome: str) -> None:
                    bar.update(1)

                return await ingest(db, found.files, tenant_id, on_file=advance)
        finally:
            await db.dispose()

    report: IngestReport = run(add)
    report.skipped[:0] = found.skipped
    for skipped in report.skipped:
        click.echo(f"mvm-chat: warning: skipped {skipped.path}: {skipped.reason}", err=True)
    click.echo(report.summary())


def _as_json(doc: DocumentInfo) -> dict[str, object]:
    return {
        "id": doc.id,
        "source": doc.source,
        "title": doc.title,
        "tenant": doc.tenant,
        "chunks": doc.chunk_count,
        "content_hash": doc.content_hash,
        "updated_at": doc.updated_at.isoformat(),
    }


@kb.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_obj
def kb_list(ctx: Context, as_json: bool) -> None:
    """List the ingested documents: tenant (or shared), chunks, path and title."""
    from mvm_chat.cli import run

    settings = ctx.settings
    _ready(settings)

    async def listing() -> list[DocumentInfo]:
        db = await _open(settings)
        try:
            return await list_documents(db)
        finally:
            await db.dispose()

    documents: list[DocumentInfo] = run(listing)
    if as_json:
        click.echo(json.dumps([_as_json(doc) for doc in documents], indent=2))
        return
    if not documents:
        click.echo("no documents (add some with: mvm-chat kb add PATH...)")
        return
    for doc in documents:
        tenant = doc.tenant if doc.tenant is not None else "(shared)"
        click.echo(f"{tenant}\t{doc.chunk_count}\t{doc.source}\t{doc.title}")
