"""The admin cost review (admin keys only): summaries, the ledger, its CSV export, rightsizing.

``from`` and ``to`` take a date (``YYYY-MM-DD``, a UTC day; a date ``to`` includes that day) or
an ISO-8601 date-time (UTC when it has no offset); the range is ``[from, to)``. Without them:
the last 30 UTC days, today included. See ``docs/costs.md``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import Parameter, QueryParameter
from litestar.response import Stream

from mvm_chat.chat.services import Services
from mvm_chat.errors import InvalidInput
from mvm_chat.ledger import reports
from mvm_chat.ledger.reports import LedgerFilters

DEFAULT_DAYS = 30
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

From = Annotated[
    str | None,
    QueryParameter(name="from", max_length=64, description="YYYY-MM-DD or ISO-8601 date-time"),
]
To = Annotated[
    str | None,
    QueryParameter(name="to", max_length=64, description="YYYY-MM-DD (inclusive) or date-time"),
]
Filter = Annotated[str | None, Parameter(max_length=200)]


def parse_moment(name: str, value: str) -> datetime:
    """A ``from``/``to`` value as an aware UTC datetime; a date ``to`` means the next midnight."""
    text = value.strip()
    try:
        if _DATE.match(text):
            moment = datetime.combine(datetime.fromisoformat(text).date(), time(), tzinfo=UTC)
            return moment + timedelta(days=1) if name == "to" else moment
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            # An unescaped "+" in a query string arrives as a space.
            head, sep, tail = text.rpartition(" ")
            if not sep:
                raise
            moment = datetime.fromisoformat(f"{head}+{tail}")
    except ValueError:
        raise InvalidInput(
            name, f"not a date (YYYY-MM-DD) or ISO-8601 date-time: {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    lo = parse_moment("from", start) if start else None
    hi = parse_moment("to", end) if end else None
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInput("from", "is after to")
    return lo, hi


def report_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """``[from, to)`` of a report; a missing ``to`` is the end of today (UTC), a missing
    ``from`` is :data:`DEFAULT_DAYS` days before ``to``."""
    lo, hi = _range(start, end)
    if hi is None:
        hi = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(), UTC)
        if lo is not None and lo > hi:
            raise InvalidInput("from", "is after to")
    return (lo if lo is not None else hi - timedelta(days=DEFAULT_DAYS)), hi


class AdminCostsController(Controller):
    path = "/admin"
    tags = ["costs"]

    @get("/costs/summary", summary="Spend, baseline and savings, grouped")
    async def summary(
        self,
        services: Services,
        start: From = None,
        end: To = None,
        group_by: Annotated[str, Parameter(max_length=32)] = "day",
        tenant: Filter = None,
    ) -> dict[str, Any]:
        lo, hi = report_range(start, end)
        if group_by not in reports.GROUP_BY:
            raise InvalidInput("group_by", f"must be one of {', '.join(reports.GROUP_BY)}")
        async with services.db.session() as session:
            tenant_id = await reports.tenant_id_of(session, tenant) if tenant else None
            result = await reports.summary(session, lo, hi, group_by, tenant_id)
        return result.as_json()

    @get("/costs/ledger", summary="Ledger rows, newest first, keyset-paginated")
    async def ledger(
        self,
        services: Services,
        start: From = None,
        end: To = None,
        tenant: Filter = None,
        model: Filter = None,
        tier: Filter = None,
        intent: Filter = None,
        status: Filter = None,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        filters = _filters(start, end, tenant, model, tier, intent, status)
        async with services.db.session() as session:
            rows, next_cursor = await reports.ledger_page(session, filters, cursor, limit)
        return {"data": [row.as_json() for row in rows], "next_cursor": next_cursor}

    @get("/costs/ledger.csv", summary="The ledger as CSV, streamed", media_type="text/csv")
    async def ledger_csv(
        self,
        services: Services,
        start: From = None,
        end: To = None,
        tenant: Filter = None,
        model: Filter = None,
        tier: Filter = None,
        intent: Filter = None,
        status: Filter = None,
    ) -> Stream:
        filters = _filters(start, end, tenant, model, tier, intent, status)
        if tenant is not None:  # an unknown tenant is a 422 before the stream starts
            async with services.db.session() as session:
                await reports.tenant_id_of(session, tenant)

        async def body() -> AsyncIterator[str]:
            async with (
                services.db.session() as session,
                aclosing(reports.ledger_csv(session, filters)) as chunks,
            ):
                async for chunk in chunks:
                    yield chunk

        return Stream(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="ledger.csv"'},
        )

    @get("/rightsizing", summary="Per intent: the minimum viable tier and what it would save")
    async def rightsizing(
        self, services: Services, start: From = None, end: To = None
    ) -> dict[str, Any]:
        lo, hi = report_range(start, end)
        async with services.db.session() as session:
            advice = await reports.rightsizing(session, services.settings, lo, hi)
        return {"from": lo.isoformat(), "to": hi.isoformat(), "intents": advice}


def _filters(
    start: str | None,
    end: str | None,
    tenant: str | None,
    model: str | None,
    tier: str | None,
    intent: str | None,
    status: str | None,
) -> LedgerFilters:
    lo, hi = _range(start, end)
    return LedgerFilters(tenant, model, tier, intent, status, lo, hi)
