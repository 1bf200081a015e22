"""The ledger's rows for review: filtered pages, newest first, and a streamed CSV export.

Pages use keyset pagination over ``(created_at, id)`` (the ``ix_ledger_created_id`` and
``ix_ledger_tenant_created_id`` indexes), so a page costs the same at any depth. The cursor is
opaque to clients: URL-safe base64 of ``{"t": created_at, "i": id}`` of the last row shown.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, literal_column, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from mvm_chat.errors import InvalidInput
from mvm_chat.ledger.report_rows import usd
from mvm_chat.store.models import LedgerEntry, Tenant

STATUSES = ("ok", "escalated", "error", "client_disconnected")
"""The statuses a ledger row can have."""

_le = LedgerEntry.__table__.c
COLUMNS = (
    _le.id,
    _le.created_at,
    _le.tenant_id,
    _le.request_id,
    _le.attempt,
    _le.conversation_id,
    _le.message_id,
    _le.model,
    _le.engine,
    _le.tier,
    _le.intent,
    _le.status,
    _le.cache,
    _le.prompt_tokens,
    _le.completion_tokens,
    _le.latency_ms,
    _le.ttft_ms,
    _le.cost_usd,
    _le.baseline_cost_usd,
    _le.escalation_reason,
)
CSV_HEADER = (
    "id",
    "created_at",
    "tenant",
    "request_id",
    "attempt",
    "conversation_id",
    "message_id",
    "model",
    "engine",
    "tier",
    "intent",
    "status",
    "cache",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "cost_usd",
    "baseline_cost_usd",
    "savings_usd",
    "escalation_reason",
)


@dataclass(frozen=True)
class LedgerFilters:
    """What to show: each filter set narrows to rows equal to it; ``start``/``end`` bound
    ``created_at`` to ``[start, end)``."""

    tenant: str | None = None
    """The tenant's name."""
    model: str | None = None
    tier: str | None = None
    intent: str | None = None
    status: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}")


@dataclass(frozen=True)
class LedgerRow:
    """One ledger row as the review shows it, with its tenant's name."""

    id: int
    created_at: datetime
    tenant: str
    request_id: str
    attempt: int
    conversation_id: str | None
    message_id: str | None
    model: str
    engine: str
    tier: str
    intent: str | None
    status: str
    cache: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    ttft_ms: int | None
    cost_usd: Decimal
    baseline_cost_usd: Decimal
    escalation_reason: str | None

    def as_json(self) -> dict[str, Any]:
        body = {name: getattr(self, name) for name in CSV_HEADER if name != "savings_usd"}
        body.update(
            created_at=self.created_at.isoformat(),
            cost_usd=usd(self.cost_usd),
            baseline_cost_usd=usd(self.baseline_cost_usd),
            savings_usd=usd(self.baseline_cost_usd - self.cost_usd),
        )
        return body


def encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = json.dumps({"t": created_at.astimezone(UTC).isoformat(), "i": row_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The ``(created_at, id)`` a cursor points after; :class:`InvalidInput` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        row_id = data["i"]
        if created_at.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool):
            raise ValueError
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidInput("cursor", "not a cursor given by this API") from None
    return created_at, row_id


async def tenant_id_of(session: AsyncSession, name: str) -> str:
    """The id of the tenant called ``name``; :class:`InvalidInput` naming ``tenant`` if none."""
    found = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    if found is None:
        raise InvalidInput("tenant", f"no tenant is named {name!r}")
    return found


async def _query(session: AsyncSession, filters: LedgerFilters) -> Select[Any]:
    query = select(*COLUMNS).order_by(_le.created_at.desc(), _le.id.desc())
    if filters.tenant is not None:
        query = query.where(_le.tenant_id == await tenant_id_of(session, filters.tenant))
    for name in ("model", "tier", "intent", "status"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(_le[name] == value)
    if filters.start is not None:
        query = query.where(_le.created_at >= filters.start)
    if filters.end is not None:
        query = query.where(_le.created_at < filters.end)
    return query


async def _tenant_names(session: AsyncSession, ids: set[str] | None = None) -> dict[str, str]:
    query = select(Tenant.id, Tenant.name)
    if ids is not None:
        query = query.where(Tenant.id.in_(ids))
    return {tenant: name for tenant, name in (await session.execute(query)).tuples()}


async def ledger_page(
    session: AsyncSession, filters: LedgerFilters, cursor: str | None, limit: int
) -> tuple[list[LedgerRow], str | None]:
    """Up to ``limit`` rows after ``cursor``, newest first, and the cursor of the next page
    (None on the last page)."""
    query = await _query(session, filters)
    if cursor is not None:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(tuple_(_le.created_at, _le.id) < (created_at, row_id))
    rows = (await session.execute(query.limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    names = await _tenant_names(session, {row.tenant_id for row in rows}) if rows else {}
    page = [
        LedgerRow(
            **{name: value for name, value in row._mapping.items() if name != "tenant_id"},
            tenant=names.get(row.tenant_id, row.tenant_id),
        )
        for row in rows
    ]
    last = page[-1] if page else None
    return page, encode_cursor(last.created_at, last.id) if more and last else None


async def ledger_csv(
    session: AsyncSession, filters: LedgerFilters, batch: int = 5000
) -> AsyncGenerator[str, None]:
    """The filtered ledger as CSV text, newest first: a header row, then the rows in chunks
    read from a server-side cursor (never every row at once). On Postgres the database writes
    the CSV itself (``COPY ... TO STDOUT``), streamed through a small queue."""
    query = await _query(session, filters)
    if session.get_bind().dialect.name == "postgresql":
        async with aclosing(_copy_csv(session, query)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    names = await _tenant_names(session)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    yield out.getvalue()
    result = await session.stream(query.execution_options(yield_per=batch))
    async for part in result.partitions(batch):
        out.seek(0)
        out.truncate()
        writer.writerows(
            (
                r[0],
                r[1].isoformat(),
                names.get(r[2], r[2]),
                *r[3:17],
                f"{r[17]:.9f}",
                f"{r[18]:.9f}",
                f"{r[18] - r[17]:.9f}",
                r[19],
            )
            for r in part
        )
        yield out.getvalue()


def _copy_query(query: Select[Any]) -> Select[Any]:
    """``query`` with Postgres formatting each CSV column (the money columns keep 9 places)."""
    utc = func.timezone(literal_column("'UTC'"), _le.created_at)
    iso = func.to_char(utc, literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\''))
    tenant = select(Tenant.name).where(Tenant.id == _le.tenant_id).scalar_subquery()
    return query.with_only_columns(
        _le.id,
        iso.label("created_at"),
        tenant.label("tenant"),
        *COLUMNS[3:-1],
        (_le.baseline_cost_usd - _le.cost_usd).label("savings_usd"),
        _le.escalation_reason,
    )


async def _copy_csv(session: AsyncSession, query: Select[Any]) -> AsyncGenerator[str, None]:
    compiled = _copy_query(query).compile(dialect=session.get_bind().dialect)
    args = [compiled.params[name] for name in compiled.positiontup or ()]
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async def copy() -> None:
        try:
            await raw.copy_from_query(  # type: ignore[union-attr]
                compiled.string, *args, output=chunks.put, format="csv", header=True
            )
        except asyncio.CancelledError:  # the reader went away: nobody waits for the end
            raise
        except BaseException:
            await chunks.put(None)
            raise
        await chunks.put(None)

    task = asyncio.create_task(copy())
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk.decode()
        await task  # re-raises a failed COPY
    finally:
        if not task.done():  # abandoned mid-COPY: the connection cannot be reused
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await connection.invalidate()
