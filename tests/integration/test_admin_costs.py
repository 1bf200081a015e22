"""The admin cost review on SQLite and Postgres: seeded traffic plus real chats, checked against
sums over ``ledger_entries`` computed in SQL, to the last stored digit."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import MODEL_TOML, Server, mvm, query_db

pytestmark = pytest.mark.slow


@dataclass
class Deployment:
    server: Server
    url: str
    admin: dict[str, str]
    client: dict[str, str]

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.server.url}{path}", params=params, headers=self.admin, timeout=60)

    def sql(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return query_db(self.url, sql, **params)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp(f"costs-{request.param}")
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        env = {"MVM_CHAT_DATABASE_URL": url}
        mvm(workdir, "db", "upgrade", env=env)
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'mvm.db'}"
        env = {"MVM_CHAT_DATABASE_URL": url}
    server = Server(workdir, MODEL_TOML, env=env)
    seeded = mvm(
        workdir, "bench", "seed-ledger", "--rows", "2500", "--days", "35", "--tenants", "3",
        env=server.env,
    )  # fmt: skip
    assert "seeded 2500 ledger rows" in seeded.stdout
    server.start()
    try:
        deployment = Deployment(
            server,
            url,
            {"Authorization": f"Bearer {server.key('acme', 'admin')}"},
            {"Authorization": f"Bearer {server.key('acme')}"},
        )
        # Real turns: their ledger rows reach the rollup through the incremental upsert.
        for question in ("Where is my card?", "What is the exchange rate today?"):
            reply = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": question}]},
                headers=deployment.client,
                timeout=120,
            )
            assert reply.status_code == 200, reply.text
        yield deployment
    finally:
        server.stop()


def _money_sum(d: Deployment, column: str) -> str:
    if d.is_sqlite:  # SQLite keeps Numeric as a float: sum the stored 9-place amounts exactly
        return f"SUM(CAST(round({column} * 1000000000) AS INTEGER))"
    return f"SUM({column})"


def _money(d: Deployment, value: Any) -> Decimal:
    amount = Decimal(value or 0)
    return (amount.scaleb(-9) if d.is_sqlite else amount).quantize(Decimal("1E-9"))


GROUP_SQL = {
    "day": {
        "sqlite": "date(e.created_at)",
        "postgres": "to_char(timezone('UTC', e.created_at), 'YYYY-MM-DD')",
    },
    "model": "e.model",
    "tier": "e.tier",
    "tenant": "t.name",
    "intent": "e.intent",
}


def _expected(
    d: Deployment, group_by: str, start: datetime, end: datetime
) -> dict[Any, dict[str, Any]]:
    key = GROUP_SQL[group_by]
    if isinstance(key, dict):
        key = key["sqlite" if d.is_sqlite else "postgres"]
    rows = d.sql(
        f"SELECT {key}, COUNT(*), SUM(e.prompt_tokens), SUM(e.completion_tokens), "
        f"{_money_sum(d, 'e.cost_usd')}, {_money_sum(d, 'e.baseline_cost_usd')}, "
        "SUM(CASE WHEN e.status = 'escalated' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN e.cache = 'hit' THEN 1 ELSE 0 END) "
        "FROM ledger_entries e JOIN tenants t ON t.id = e.tenant_id "
        f"WHERE e.created_at >= :start AND e.created_at < :end GROUP BY {key}",
        start=start,
        end=end,
    )
    return {
        row[0]: {
            "requests": row[1],
            "prompt_tokens": row[2],
            "completion_tokens": row[3],
            "cost_usd": _money(d, row[4]),
            "baseline_cost_usd": _money(d, row[5]),
            "escalated": row[6],
            "cache_hits": row[7],
        }
        for row in rows
    }


def _check(d: Deployment, body: dict[str, Any], start: datetime, end: datetime) -> None:
    expected = _expected(d, body["group_by"], start, end)
    got = {row["key"]: row for row in body["rows"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        for name in ("requests", "prompt_tokens", "completion_tokens"):
            assert row[name] == want[name], (key, name)
        assert Decimal(row["cost_usd"]) == want["cost_usd"], key
        assert Decimal(row["baseline_cost_usd"]) == want["baseline_cost_usd"], key
        assert Decimal(row["savings_usd"]) == want["baseline_cost_usd"] - want["cost_usd"]
        assert row["escalation_rate"] == round(want["escalated"] / want["requests"], 6)
        assert row["cache_hit_rate"] == round(want["cache_hits"] / want["requests"], 6)
        assert row["p50_ms"] is not None and row["p95_ms"] >= row["p50_ms"]
    totals = body["totals"]
    assert "key" not in totals
    assert totals["requests"] == sum(w["requests"] for w in expected.values())
    assert Decimal(totals["cost_usd"]) == sum(
        (w["cost_usd"] for w in expected.values()), Decimal(0)
    )
    assert Decimal(totals["baseline_cost_usd"]) == sum(
        (w["baseline_cost_usd"] for w in expected.values()), Decimal(0)
    )
    # money strings add up exactly
    assert sum(Decimal(r["cost_usd"]) for r in body["rows"]) == Decimal(totals["cost_usd"])


@pytest.mark.parametrize("group_by", ["day", "model", "tier", "tenant", "intent"])
def test_summary_equals_sql_sums_over_the_ledger(deployment: Deployment, group_by: str) -> None:
    today = datetime.now(UTC).date()
    # the default range: the last 30 UTC days, today included
    body = deployment.get("/admin/costs/summary", group_by=group_by).json()
    end = datetime.combine(today + timedelta(days=1), time(), UTC)
    assert body["from"] == (end - timedelta(days=30)).isoformat()
    assert body["to"] == end.isoformat()
    _check(deployment, body, end - timedelta(days=30), end)
    assert body["totals"]["requests"] > 0
    # everything, by dates (a date `to` includes that day)
    first = today - timedelta(days=40)
    body = deployment.get(
        "/admin/costs/summary", group_by=group_by, **{"from": str(first), "to": str(today)}
    ).json()
    _check(deployment, body, datetime.combine(first, time(), UTC), end)
    all_rows = deployment.sql("SELECT COUNT(*) FROM ledger_entries")[0][0]
    assert body["totals"]["requests"] == all_rows


@pytest.mark.parametrize("group_by", ["day", "intent"])
def test_partial_days_at_both_edges_come_from_the_ledger(
    deployment: Deployment, group_by: str
) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(days=12)).replace(hour=13, minute=17, second=5, microsecond=0)
    end = (now - timedelta(days=2)).replace(hour=6, minute=0, second=0, microsecond=0)
    body = deployment.get(
        "/admin/costs/summary",
        group_by=group_by,
        **{"from": start.isoformat(), "to": end.isoformat().replace("+00:00", "Z")},
    ).json()
    assert body["from"] == start.isoformat() and body["to"] == end.isoformat()
    _check(deployment, body, start, end)
    # within one day
    inside = start.replace(hour=14)
    one_day = deployment.get(
        "/admin/costs/summary",
        group_by=group_by,
        **{"from": start.isoformat(), "to": inside.isoformat()},
    ).json()
    _check(deployment, one_day, start, inside)


def _walk(d: Deployment, limit: int, **filters: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **filters}
        if cursor:
            params["cursor"] = cursor
        page = d.get("/admin/costs/ledger", **params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= limit
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def test_ledger_pages_walk_every_row_once_newest_first(deployment: Deployment) -> None:
    rows = _walk(deployment, 400)
    expected = [
        r[0]
        for r in deployment.sql("SELECT id FROM ledger_entries ORDER BY created_at DESC, id DESC")
    ]
    assert [r["id"] for r in rows] == expected
    newest = rows[0]
    assert newest["tenant"] == "acme" and newest["model"] == "smollm2-135m"
    assert set(newest) >= {"created_at", "request_id", "tier", "intent", "status", "cost_usd"}
    assert Decimal(newest["savings_usd"]) == Decimal(newest["baseline_cost_usd"]) - Decimal(
        newest["cost_usd"]
    )

    filtered = _walk(deployment, 97, tenant="globex", status="escalated", tier="local")
    count = deployment.sql(
        "SELECT COUNT(*) FROM ledger_entries e JOIN tenants t ON t.id = e.tenant_id "
        "WHERE t.name = 'globex' AND e.status = 'escalated' AND e.tier = 'local'"
    )[0][0]
    assert len(filtered) == count > 0
    assert {(r["tenant"], r["status"], r["tier"]) for r in filtered} == {
        ("globex", "escalated", "local")
    }


def test_csv_export_has_every_row(deployment: Deployment) -> None:
    with httpx.stream(
        "GET", f"{deployment.server.url}/admin/costs/ledger.csv", headers=deployment.admin
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/csv")
        body = reply.read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    ids = [int(r["id"]) for r in rows]
    expected = [
        r[0]
        for r in deployment.sql("SELECT id FROM ledger_entries ORDER BY created_at DESC, id DESC")
    ]
    assert ids == expected
    cost = sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))
    want = deployment.sql(f"SELECT {_money_sum(deployment, 'cost_usd')} FROM ledger_entries")
    assert cost == _money(deployment, want[0][0])

    errors = httpx.get(
        f"{deployment.server.url}/admin/costs/ledger.csv",
        params={"status": "error", "from": "2000-01-01", "to": "2100-01-01"},
        headers=deployment.admin,
    ).text.splitlines()
    assert errors[0].startswith("id,created_at,tenant,")
    count = deployment.sql("SELECT COUNT(*) FROM ledger_entries WHERE status = 'error'")[0][0]
    assert len(errors) - 1 == count


def test_rightsizing_recommends_from_the_evidence(deployment: Deployment) -> None:
    body = deployment.get("/admin/rightsizing").json()
    assert body["intents"]
    for item in body["intents"]:
        assert item["calls"] == sum(e["calls"] for e in item["evidence"].values())
        assert sum(item["tier_mix"].values()) == pytest.approx(1.0, abs=1e-5)
        tier = item["recommended_tier"]
        if tier is not None:
            evidence = item["evidence"][tier]
            assert evidence["calls"] >= 30 and evidence["accepted"] / evidence["calls"] >= 0.9
            assert item["projected_monthly_savings_usd"] is not None


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/admin/costs/summary", {"from": "yesterday"}, "from"),
        ("/admin/costs/summary", {"to": "2026-13-01"}, "to"),
        ("/admin/costs/summary", {"from": "2026-11-05", "to": "2026-11-01"}, "from"),
        ("/admin/costs/summary", {"group_by": "week"}, "group_by"),
        ("/admin/costs/summary", {"tenant": "nobody"}, "tenant"),
        ("/admin/costs/ledger", {"cursor": "not-a-cursor"}, "cursor"),
        ("/admin/costs/ledger", {"cursor": "eyJ0IjogMX0"}, "cursor"),
        ("/admin/costs/ledger", {"status": "weird"}, "status"),
        ("/admin/costs/ledger", {"limit": "0"}, "limit"),
        ("/admin/costs/ledger", {"limit": "ten"}, "limit"),
        ("/admin/costs/ledger", {"from": "2026-11-01T25:00"}, "from"),
        ("/admin/costs/ledger.csv", {"status": "weird"}, "status"),
        ("/admin/rightsizing", {"to": "soon"}, "to"),
    ],
)
def test_bad_input_is_422_naming_the_parameter(
    deployment: Deployment, path: str, params: dict[str, str], name: str
) -> None:
    reply = deployment.get(path, **params)
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"].startswith(f"{name}:"), reply.json()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/costs/summary",
        "/admin/costs/ledger",
        "/admin/costs/ledger.csv",
        "/admin/rightsizing",
    ],
)
def test_client_keys_are_refused(deployment: Deployment, path: str) -> None:
    reply = httpx.get(f"{deployment.server.url}{path}", headers=deployment.client)
    assert reply.status_code == 403
    assert httpx.get(f"{deployment.server.url}{path}").status_code == 401


def test_rebuild_command_keeps_the_totals(deployment: Deployment, tmp_path: Path) -> None:
    before = deployment.get("/admin/costs/summary", group_by="tier").json()
    rebuilt = mvm(deployment.server.workdir, "ledger", "rebuild-rollups", env=deployment.server.env)
    assert "rollup rebuilt" in rebuilt.stdout
    assert deployment.get("/admin/costs/summary", group_by="tier").json() == before
