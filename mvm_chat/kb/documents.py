"""What the knowledge base holds: its documents, for ``mvm-chat kb list``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from mvm_chat.store.db import Database
from mvm_chat.store.models import KbDocument, Tenant


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """One ingested document; ``tenant`` is the tenant's name, or None when shared."""

    id: str
    source: str
    title: str
    tenant: str | None
    chunk_count: int
    content_hash: str
    updated_at: datetime


async def list_documents(db: Database) -> list[DocumentInfo]:
    """Every document, shared ones first, then by tenant name and path."""
    statement = (
        select(KbDocument, Tenant.name)
        .outerjoin(Tenant, Tenant.id == KbDocument.tenant_id)
        .order_by(Tenant.name.is_not(None), Tenant.name, KbDocument.source)
    )
    async with db.session() as session:
        rows = (await session.execute(statement)).all()
    return [
        DocumentInfo(
            id=doc.id,
            source=doc.source,
            title=doc.title,
            tenant=tenant,
            chunk_count=doc.chunk_count,
            content_hash=doc.content_hash,
            updated_at=doc.updated_at,
        )
        for doc, tenant in rows
    ]
