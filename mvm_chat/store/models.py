"""SQLAlchemy models: the tables of DESIGN section 5."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

MONEY = Numeric(18, 9)


def new_id() -> str:
    """A new random object id: 128 random bits as 32 hex characters."""
    return os.urandom(16).hex()  # what uuid4().hex holds, without building a UUID


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite as on Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


CACHE_HITS = ("hit", "semantic")
"""Ledger ``cache`` values of an answer served from the response cache (exact or semantic)."""


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    tier: Mapped[str | None] = mapped_column(String(64), default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_seq", "conversation_id", "seq", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    tier: Mapped[str | None] = mapped_column(String(64), default=None)
    intent: Mapped[str | None] = mapped_column(String(200), default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(Base):
    """One model call: what it cost and what the baseline model would have cost."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("request_id", "attempt", name="uq_ledger_request_attempt"),
        Index("ix_ledger_conversation", "conversation_id"),
        # The admin views page newest first, by keyset on (created_at, id).
        Index("ix_ledger_created_id", "created_at", "id"),
        Index("ix_ledger_tenant_created_id", "tenant_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    conversation_id: Mapped[str | None] = mapped_column(String(32), default=None)
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)
    model: Mapped[str] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(64))
    intent: Mapped[str | None] = mapped_column(String(200), default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    cache: Mapped[str] = mapped_column(String(16), default="miss")
    """``miss``, ``hit`` (exact cache), ``semantic``, ``bypass``, ``skill`` or ``off``."""
    status: Mapped[str] = mapped_column(String(32), default="ok")
    """``ok``, ``escalated``, ``error`` or ``client_disconnected``."""
    cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    baseline_cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    escalation_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbDocument(Base):
    """A file ingested into the knowledge base; ``tenant_id`` None means shared by all tenants."""

    __tablename__ = "kb_documents"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", name="uq_kb_documents_tenant_source"),
        # NULLs are distinct in a unique constraint: shared documents need their own index.
        Index(
            "uq_kb_documents_shared_source",
            "source",
            unique=True,
            sqlite_where=text("tenant_id IS NULL"),
            postgresql_where=text("tenant_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), default=None
    )
    source: Mapped[str] = mapped_column(String(1024))
    title: Mapped[str] = mapped_column(String(500), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbChunk(Base):
    """A passage of a knowledge-base document, indexed for full-text search."""

    __tablename__ = "kb_chunks"
    __table_args__ = (Index("ix_kb_chunks_document_seq", "document_id", "seq", unique=True),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    document_id: Mapped[str] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(String(500), default="")
    text: Mapped[str] = mapped_column(Text)


class Handoff(Base):
    """A conversation handed to a person: ``open`` -> ``claimed`` -> ``resolved``."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_tenant_status_created", "tenant_id", "status", "created_at"),
        Index("ix_handoffs_conversation", "conversation_id"),
        # At most one active handoff per conversation, also when two processes race to open one.
        Index(
            "uq_handoffs_conversation_active",
            "conversation_id",
            unique=True,
            sqlite_where=text("status IN ('open', 'claimed')"),
            postgresql_where=text("status IN ('open', 'claimed')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str] = mapped_column(String(500), default="")
    claimed_by: Mapped[str | None] = mapped_column(String(32), default=None)
    """The id of the API key that claimed it."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)


class Budget(Base):
    """A tenant's monthly spending limit on paid calls (USD)."""

    __tablename__ = "budgets"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    monthly_usd: Mapped[Decimal] = mapped_column(MONEY)
    include_self_hosted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether self-hosted (GPU / CPU time) spend counts against the budget, too."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetMonth(Base):
    """A tenant's budget counters for one calendar month (UTC): what is reserved by calls
    in flight (when there is no Redis), and the highest threshold already announced."""

    __tablename__ = "budget_months"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    """``YYYY-MM``."""
    spent_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    reserved_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    notified_pct: Mapped[int] = mapped_column(Integer, default=0)


class IdempotencyKey(Base):
    """A client's ``Idempotency-Key``: ``running`` while its turn runs, then ``done`` with the
    reply to replay."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_idempotency_tenant_key"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    route: Mapped[str] = mapped_column(String(200))
    body_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)
    """The answer, set in the transaction that stores it."""
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
