"""Budgets on real servers: concurrent paid calls never overspend, an exhausted budget keeps
answering from the free tier, thresholds are announced once (also across two processes on
Postgres and Redis), and the admin routes.

The paid tier is llama-cpp-python's own OpenAI server (the stand-in for a paid API), priced
high enough that a few calls spend a small budget.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from mvm_chat.store.db import Database
from tests.support import LlamaCppServer, Server, mvm, redis_toml

HOOK_PLUGIN = """
import json
import os

from mvm_chat import Escalation, hookimpl


class AskedFor:
    name = "asked_for"

    def after_generation(self, turn, reply_text, confidence):
        if "escalate me" in turn.text:
            return Escalation("api", "the user asked for it")
        return None


@hookimpl
def register_escalation_policies(register):
    register(AskedFor())


@hookimpl
def on_budget_threshold(tenant, spent_usd, budget_usd):
    with open(os.environ["BUDGET_HOOK_FILE"], "a") as out:
        out.write(json.dumps({"tenant": tenant, "spent": str(spent_usd),
                              "budget": str(budget_usd), "pid": os.getpid()}) + "\\n")
"""
REFUND = "I want a refund for my order."


def _config(upstream: LlamaCppServer, cpu_hour_usd: str = "0") -> str:
    return f"""
[[tiers]]
name = "local"
[[tiers]]
name = "api"

[[models]]
name = "smollm2-135m"
tier = "local"
engine = "llamacpp"
path = "builtin:smollm2-135m"
max_tokens = 8
temperature = 0.0
cpu_hour_usd = "{cpu_hour_usd}"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "{upstream.api_base}"
upstream_model = "smol"
price_input_per_mtok = "1000"
price_output_per_mtok = "10000"
max_tokens = 8
temperature = 0.0

[routing]
baseline_model = "frontier"
[routing.intent_floors]
refund_request = "api"

[plugins.keyword_intents.rules]
refund_request = ["\\\\brefund"]
"""


def _server(folder: Path, config: str, hooks: Path, env: dict[str, str] | None = None) -> Server:
    plugins = folder / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "budget_hook.py").write_text(HOOK_PLUGIN)
    return Server(
        folder,
        config,
        env={"MVM_CHAT_PLUGINS_DIR": str(plugins), "BUDGET_HOOK_FILE": str(hooks), **(env or {})},
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(tmp_path_factory.mktemp("paid-api") / "upstream.log").start()
    yield server
    server.stop()


def _ask(server: Server, key: str, content: str, model: str = "auto") -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"},
        timeout=120,
    )
    assert response.status_code == 200, response.text  # never refused
    return dict(response.json()["mvm"])


def _admin(server: Server, key: str, method: str, tenant: str = "", **body: Any) -> httpx.Response:
    path = f"{server.url}/admin/budgets" + (f"/{tenant}" if tenant else "")
    return httpx.request(
        method,
        path,
        headers={"Authorization": f"Bearer {key}"},
        json=body or None,
        timeout=30,
    )


def _hooks(path: Path, tenant: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [line for line in lines if line["tenant"] == tenant]


def _expected_thresholds(spent: Decimal, budget: Decimal) -> list[int]:
    return [t for t in (50, 80, 100) if spent * 100 >= budget * t]


def _check_exhausted(mvm_: dict[str, Any], source_tier: str = "api") -> None:
    assert mvm_["budget"] == "exhausted"
    assert (mvm_["model"], mvm_["tier"]) == ("smollm2-135m", "local")
    assert {"from": source_tier, "to": "local", "reason": "budget exhausted"} in mvm_["escalations"]


def _burst(calls: list[tuple[Server, str, str, str]]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda c: _ask(*c), calls))


def _spend_until_exhausted(
    servers: list[Server], key: str, admin: str, tenant: str, budget: str, burst: int
) -> list[dict[str, Any]]:
    """Concurrent paid requests (by model name and by intent floor), then more until the
    budget says it is spent; every one of them is answered."""
    calls = [
        (servers[i % len(servers)], key, f"{REFUND} Order {i}.", "frontier" if i % 2 else "auto")
        for i in range(burst)
    ]
    replies = _burst(calls)
    for i in range(30):
        replies.append(_ask(servers[i % len(servers)], key, f"{REFUND} Again {i}."))
        if replies[-1]["budget"] == "exhausted":
            break
    paid = [r for r in replies if r["tier"] == "api"]
    assert paid and all(r["budget"] == "ok" for r in paid), "paid answers while it lasted"
    assert all(Decimal(r["cost_usd"]) > 0 for r in paid)
    for reply in replies:
        if reply["tier"] != "api":
            _check_exhausted(reply)
    assert replies[-1]["budget"] == "exhausted"
    spent_after = _admin(servers[0], admin, "GET", tenant).json()
    assert spent_after["reserved_usd"] == "0.000000", "every reservation was settled"
    assert Decimal(spent_after["spent_usd"]) <= Decimal(budget)
    return replies


# --- SQLite, no Redis ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_setup(
    upstream: LlamaCppServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("budgets-sqlite")
    hooks = folder / "hooks.jsonl"
    # local CPU time priced at $36/h (a cent a second): paid only for budgets that include it
    server = _server(folder / "server", _config(upstream, cpu_hour_usd="36"), hooks).start()
    yield server, hooks
    server.stop()


def _paid_ledger_sqlite(server: Server, tenant: str, engines: tuple[str, ...]) -> Decimal:
    marks = ",".join("?" * len(engines))
    with sqlite3.connect(server.workdir / "var" / "mvm_chat.db") as db:
        rows = db.execute(
            "SELECT l.cost_usd FROM ledger_entries l JOIN tenants t ON t.id = l.tenant_id "
            f"WHERE t.name = ? AND l.engine IN ({marks})",
            (tenant, *engines),
        ).fetchall()
    return sum((Decimal(str(cost)).quantize(Decimal("1e-9")) for (cost,) in rows), Decimal(0))


def test_sqlite_budget_keeps_answering_from_the_free_tier(
    sqlite_setup: tuple[Server, Path],
) -> None:
    server, hooks = sqlite_setup
    admin = server.key("ops", role="admin")
    key = server.key("small")
    assert _ask(server, server.key("unlimited"), REFUND)["budget"] is None
    put = _admin(server, admin, "PUT", "small", monthly_usd="0.50")
    assert put.status_code == 200, put.text

    _spend_until_exhausted([server], key, admin, "small", "0.50", burst=6)
    paid = _paid_ledger_sqlite(server, "small", ("openai",))
    assert 0 < paid <= Decimal("0.50")
    report = _admin(server, admin, "GET", "small").json()
    assert report["spent_usd"] == str(paid.quantize(Decimal("0.000001")))
    expected = _expected_thresholds(paid, Decimal("0.50"))
    assert expected[:1] == [50], "a refusal leaves less than one worst case unspent"
    assert len(_hooks(hooks, "small")) == len(expected)
    # an escalation the budget cannot pay for keeps the answer it has
    kept = _ask(server, key, "Hello there, escalate me please.")
    assert (kept["tier"], kept["budget"]) == ("local", "exhausted")
    assert kept["escalations"] == [
        {"from": "local", "to": "api", "reason": "the user asked for it"},
        {"from": "api", "to": "local", "reason": "budget exhausted"},
    ]
    escalated = _ask(server, server.key("unlimited"), "Hi, escalate me.")
    assert (escalated["tier"], escalated["budget"]) == ("api", None)
    # a local answer is not paid spend for this budget (it does not include self-hosted)
    assert _paid_ledger_sqlite(server, "small", ("openai", "llamacpp")) > paid


def test_self_hosted_budget_announces_each_threshold_once(
    sqlite_setup: tuple[Server, Path],
) -> None:
    """Local CPU time counts for this tenant; its worst case (timeout_s of CPU time) never
    fits, so the default tier answers as the last resort and its spend passes 100%."""
    server, hooks = sqlite_setup
    admin = server.key("ops2", role="admin")
    put = _admin(server, admin, "PUT", "selfhost", monthly_usd="0.005", include_self_hosted=True)
    assert put.status_code == 404  # no such tenant yet
    key = server.key("selfhost")
    put = _admin(server, admin, "PUT", "selfhost", monthly_usd="0.005", include_self_hosted=True)
    assert put.json()["include_self_hosted"] is True
    for i in range(40):
        reply = _ask(server, key, f"Tell me about the weather, part {i}.")
        assert reply["budget"] == "exhausted" and reply["tier"] == "local"
        if len(_hooks(hooks, "selfhost")) == 3:
            break
    for i in range(2):
        _ask(server, key, f"And once more, {i}.")
    lines = _hooks(hooks, "selfhost")
    assert len(lines) == 3, lines
    for line, threshold in zip(lines, (50, 80, 100), strict=True):
        assert Decimal(line["spent"]) * 100 >= Decimal(line["budget"]) * threshold
        assert Decimal(line["budget"]) == Decimal("0.005")
    spent = _paid_ledger_sqlite(server, "selfhost", ("llamacpp", "openai"))
    assert Decimal(_admin(server, admin, "GET", "selfhost").json()["spent_usd"]) == spent.quantize(
        Decimal("0.000001")
    )


def test_admin_budget_routes(sqlite_setup: tuple[Server, Path]) -> None:
    server, _ = sqlite_setup
    admin = server.key("ops3", role="admin")
    client = server.key("routes")
    refused = httpx.get(
        f"{server.url}/admin/budgets", headers={"Authorization": f"Bearer {client}"}
    )
    assert refused.status_code == 403
    assert _admin(server, admin, "GET", "nobody").status_code == 404
    no_budget = _admin(server, admin, "GET", "routes")
    assert no_budget.status_code == 404 and "no budget" in no_budget.json()["detail"]
    assert _admin(server, admin, "PUT", "nobody", monthly_usd="1").status_code == 404
    for bad in ("-1", "abc", "NaN", "Infinity", "1e400", "", "0.0000000001", 25.0, 25, None):
        response = _admin(server, admin, "PUT", "routes", monthly_usd=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"].startswith("monthly_usd"), response.text
    missing = _admin(server, admin, "PUT", "routes", include_self_hosted=True)
    assert missing.status_code == 422 and missing.json()["detail"].startswith("monthly_usd")
    unknown = _admin(server, admin, "PUT", "routes", monthly_usd="1", monthly="1")
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("monthly:")
    wrong_flag = _admin(server, admin, "PUT", "routes", monthly_usd="1", include_self_hosted="y")
    assert wrong_flag.status_code == 422
    assert wrong_flag.json()["detail"].startswith("include_self_hosted")

    put = _admin(server, admin, "PUT", "routes", monthly_usd="25.00")
    assert put.status_code == 200
    body = put.json()
    assert body == {
        "tenant": "routes",
        "month": body["month"],
        "monthly_usd": "25.000000",
        "include_self_hosted": False,
        "spent_usd": "0.000000",
        "reserved_usd": "0.000000",
        "remaining_usd": "25.000000",
        "percent_used": "0.00",
    }
    assert len(body["month"]) == 7 and body["month"][4] == "-"
    assert _admin(server, admin, "GET", "routes").json() == body
    listed = _admin(server, admin, "GET").json()
    assert body in listed and [r["tenant"] for r in listed] == sorted(r["tenant"] for r in listed)
    changed = _admin(server, admin, "PUT", "routes", monthly_usd="0", include_self_hosted=True)
    assert changed.json()["monthly_usd"] == "0.000000"
    assert changed.json()["percent_used"] == "100.00"
    assert _admin(server, admin, "DELETE", "routes").status_code == 204
    assert _admin(server, admin, "GET", "routes").status_code == 404
    assert _admin(server, admin, "DELETE", "routes").status_code == 404


# --- Postgres and Redis, two server processes -------------------------------------------


@pytest.fixture(scope="module")
def pg_setup(
    upstream: LlamaCppServer,
    pg_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[Server], Path]]:
    folder = tmp_path_factory.mktemp("budgets-pg")
    hooks = folder / "hooks.jsonl"
    config = _config(upstream) + redis_toml(redis_url, redis_prefix)
    env = {"MVM_CHAT_DATABASE_URL": pg_url}
    first = _server(folder / "one", config, hooks, env)
    mvm(first.workdir, "db", "upgrade", env=first.env)
    servers = [first.start()]
    try:
        servers.append(_server(folder / "two", config, hooks, env).start())
        yield servers, hooks
    finally:
        for server in servers:
            server.stop()


def _paid_ledger_pg(url: str, tenant: str) -> Decimal:
    async def run() -> Decimal:
        db = Database(url)
        try:
            async with db.session() as session:
                total = await session.scalar(
                    text(
                        "SELECT COALESCE(SUM(l.cost_usd), 0) FROM ledger_entries l "
                        "JOIN tenants t ON t.id = l.tenant_id "
                        "WHERE t.name = :tenant AND l.engine = 'openai'"
                    ),
                    {"tenant": tenant},
                )
            return Decimal(total)
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_two_processes_share_one_budget_on_postgres_and_redis(
    pg_setup: tuple[list[Server], Path], pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    servers, hooks = pg_setup
    one = servers[0]
    admin = one.key("ops", role="admin")
    key = one.key("tight")
    put = _admin(one, admin, "PUT", "tight", monthly_usd="1.00")
    assert put.status_code == 200, put.text

    _spend_until_exhausted(servers, key, admin, "tight", "1.00", burst=10)
    paid = _paid_ledger_pg(pg_url, "tight")
    assert 0 < paid <= Decimal("1.00")
    keys = list(redis.Redis.from_url(redis_url).scan_iter(match=f"{redis_prefix}budget:*"))
    assert keys, "the counters live in Redis under the configured prefix"
    # each threshold reached is announced once, by one of the two processes
    lines = _hooks(hooks, "tight")
    expected = _expected_thresholds(paid, Decimal("1.00"))
    assert expected[:2] == [50, 80], "a refusal leaves less than one worst case unspent"
    assert len(lines) == len(expected), lines
    report = _admin(servers[1], admin, "GET", "tight").json()
    assert report["spent_usd"] == str(paid.quantize(Decimal("0.000001")))
