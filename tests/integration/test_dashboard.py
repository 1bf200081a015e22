"""The admin dashboard at ``GET /admin/`` in headless Chromium: sign-in, and every chart drawn
from the same numbers the JSON admin API reports."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from mvm_chat.engines.base import Usage
from mvm_chat.ledger.ledger import CallRecord, ledger_row
from mvm_chat.settings import load_settings
from mvm_chat.store.db import Database
from mvm_chat.store.models import LedgerEntry
from mvm_chat.store.rollups import add_to_rollup
from tests.browser import Browser
from tests.support import MODEL_TOML, Server, mvm

pytestmark = pytest.mark.slow

CHARTS = ("spend", "savings", "escalation", "tiers", "intents", "budgets", "handoffs")
NO_INTENT = "(no intent)"


def _config(workdir: Path, standin: str) -> str:
    return (
        MODEL_TOML
        + f"""
[[tiers]]
name = "api"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "{standin}/v1"
upstream_model = "smol-gpu"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"

[routing]
baseline_model = "frontier"

[database]
url = "sqlite+aiosqlite:///{workdir}/mvm.db"
"""
    )


class Site:
    """The server under test with its keys."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.admin = server.key("ops", "admin")
        self.acme = server.key("acme")
        self.globex = server.key("globex")

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        response = httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {key or self.admin}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def chat(self, key: str, text: str, model: str = "auto") -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {key}"}
        conversation = httpx.post(f"{self.url}/v1/conversations", json={}, headers=auth).json()
        response = httpx.post(
            f"{self.url}/v1/conversations/{conversation['id']}/messages",
            json={"content": text, "model": model},
            headers=auth,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        reply: dict[str, Any] = response.json()
        return reply


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, standin: str) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("dashboard")
    server = Server(workdir, _config(workdir, standin)).start()
    try:
        yield Site(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as running:
        yield running


async def _seed_history(workdir: Path, tenants: dict[str, str]) -> None:
    """Ledger rows of earlier days, written by the app's own ledger code (priced against the
    baseline, counted into the rollup in the same transaction), as a turn would write them."""
    settings = load_settings(workdir / "mvm_chat.toml")
    local, frontier = settings.model("smollm2-135m"), settings.model("frontier")
    assert local is not None and frontier is not None
    plan = [  # days ago, tenant, model, intent, status, prompt, completion
        (6, "acme", local, "card_arrival", "ok", 120, 40),
        (6, "acme", frontier, "card_arrival", "ok", 150, 60),
        (5, "globex", local, "refund", "escalated", 300, 80),
        (5, "globex", frontier, "refund", "ok", 320, 90),
        (3, "acme", local, None, "ok", 90, 30),
        (2, "globex", frontier, "dispute_charge", "ok", 800, 200),
        (2, "acme", local, "card_arrival", "escalated", 100, 20),
        (1, "acme", frontier, "card_arrival", "ok", 110, 70),
    ]
    now = datetime.now(UTC)
    db = Database(settings.database.url)
    try:
        async with db.transaction() as session:
            entries: list[dict[str, Any]] = []
            for days_ago, tenant, model, intent, status, prompt, completion in plan:
                call = CallRecord(
                    request_id=uuid.uuid4().hex,
                    attempt=0,
                    tenant_id=tenants[tenant],
                    api_key_id=None,
                    conversation_id=uuid.uuid4().hex,
                    model=model,
                    usage=Usage(prompt, completion),
                    latency_s=0.4,
                    ttft_s=0.1,
                    status=status,
                    intent=intent,
                    escalation_reason="low answer confidence" if status == "escalated" else None,
                )
                entry = ledger_row(settings, call, None)
                entry["created_at"] = now - timedelta(days=days_ago)
                entries.append(entry)
            await session.execute(insert(LedgerEntry), entries)
            await add_to_rollup(session, entries)
    finally:
        await db.engine.dispose()


def _sign_in(browser: Browser, site: Site, key: str) -> str:
    """Submit the sign-in form with ``key``; returns the path the browser ends on."""
    browser.navigate(f"{site.url}/admin/login")
    browser.evaluate(f"document.getElementById('key').value = {json.dumps(key)}")
    browser.evaluate("document.getElementById('login-form').requestSubmit()")
    return str(
        browser.wait_for(
            "document.readyState === 'complete' && (document.getElementById('login-error')"
            " || document.querySelector('[data-chart]')) && location.pathname"
        )
    )


def _marks(browser: Browser, selector: str) -> list[tuple[str, str]]:
    """``(data-key, data-value)`` of the elements ``selector`` finds, in page order."""
    found: list[list[str]] = browser.evaluate(
        f"[...document.querySelectorAll({json.dumps(selector)})]"
        ".map(e => [e.dataset.key, e.dataset.value])"
    )
    return [(key, value) for key, value in found]


def test_signed_out_visitors_go_to_the_sign_in_form(site: Site, browser: Browser) -> None:
    browser.navigate(f"{site.url}/admin/")
    assert browser.evaluate("location.pathname") == "/admin/login"
    assert browser.evaluate("document.cookie") == ""  # HttpOnly: never visible to scripts

    # a wrong key and a client (non-admin) key both stay on the sign-in form
    for key in ("mvm_not-a-key", site.acme):
        assert _sign_in(browser, site, key) == "/admin/login"
        assert "not a valid admin key" in browser.evaluate(
            "document.getElementById('login-error').textContent"
        )
    browser.navigate(f"{site.url}/admin/")
    assert browser.evaluate("location.pathname") == "/admin/login"

    # a form without a key, or with an oversized one, is refused the same way
    for form in ({}, {"key": "k" * 10_000}):
        refused = httpx.post(f"{site.url}/admin/login", data=form)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers

    # the JSON admin API does not take the cookie: it still wants the bearer header
    assert httpx.get(
        f"{site.url}/admin/tenants", cookies={"mvm_admin": site.admin}
    ).status_code == (401)


def test_empty_dashboard_says_no_data_yet(site: Site, browser: Browser) -> None:
    browser.errors.clear()  # the refused sign-ins above were logged as 403s
    assert _sign_in(browser, site, site.admin) == "/admin/"
    assert browser.evaluate("document.cookie") == ""
    for chart in CHARTS:
        assert (
            browser.evaluate(f"document.querySelector('[data-chart={chart}]').dataset.empty")
            == "true"
        ), chart
    assert browser.evaluate("document.querySelectorAll('[data-value]').length") == (
        # only the totals and the open-handoff count, all zero
        browser.evaluate("document.querySelectorAll('[data-kpi], #handoff-count').length")
    )
    assert browser.evaluate("document.querySelector('[data-kpi=requests]').dataset.value") == "0"
    assert browser.errors == []


def test_dashboard_draws_each_chart_from_the_data(site: Site, browser: Browser) -> None:
    # real turns: two local answers, one paid answer, one handoff
    site.chat(site.acme, "Hello, when will my card arrive?")
    site.chat(site.acme, "And what about my refund?")
    paid = site.chat(site.acme, "Summarise my account.", model="frontier")
    assert paid["mvm"]["tier"] == "api" and Decimal(paid["mvm"]["cost_usd"]) > 0
    handoff_id = site.chat(site.globex, "I want to talk to a human.")["mvm"]["handoff_id"]
    assert handoff_id
    tenants = {t["name"]: t["id"] for t in site.get("/admin/tenants")}
    asyncio.run(_seed_history(site.server.workdir, tenants))
    budget = httpx.put(
        f"{site.url}/admin/budgets/acme",
        json={"monthly_usd": "0.002", "include_self_hosted": False},
        headers={"Authorization": f"Bearer {site.admin}"},
    )
    assert budget.status_code == 200, budget.text

    browser.navigate(f"{site.url}/admin/")
    assert browser.evaluate("location.pathname") == "/admin/"
    window = {
        "from": browser.evaluate("document.getElementById('range').dataset.from"),
        "to": browser.evaluate("document.getElementById('range').dataset.to"),
    }
    days = site.get("/admin/costs/summary", group_by="day", **window)
    tiers = site.get("/admin/costs/summary", group_by="tier", **window)
    intents = site.get("/admin/costs/summary", group_by="intent", **window)
    assert len(days["rows"]) == 6  # five earlier days and today

    # spend against baseline, savings and escalation rate: one mark per day with traffic
    assert _marks(browser, "[data-chart=spend] [data-series=cost]") == [
        (r["key"], r["cost_usd"]) for r in days["rows"]
    ]
    assert _marks(browser, "[data-chart=spend] [data-series=baseline]") == [
        (r["key"], r["baseline_cost_usd"]) for r in days["rows"]
    ]
    assert _marks(browser, "[data-chart=savings] [data-value]") == [
        (r["key"], r["savings_usd"]) for r in days["rows"]
    ]
    escalation = _marks(browser, "[data-chart=escalation] [data-value]")
    assert [(k, float(v)) for k, v in escalation] == [
        (r["key"], r["escalation_rate"]) for r in days["rows"]
    ]
    assert any(float(v) > 0 for _, v in escalation)

    # the tier mix (requests per tier) and the top intents by cost
    assert sorted(_marks(browser, "[data-chart=tiers] [data-value]")) == sorted(
        (r["key"], str(r["requests"])) for r in tiers["rows"]
    )
    assert {k for k, _ in _marks(browser, "[data-chart=tiers] [data-value]")} == {"local", "api"}
    assert _marks(browser, "[data-chart=intents] [data-value]") == [
        (r["key"] or NO_INTENT, r["cost_usd"]) for r in intents["rows"][:10]
    ]

    # the totals
    for name in ("cost_usd", "baseline_cost_usd", "savings_usd", "requests"):
        shown = browser.evaluate(f"document.querySelector('[data-kpi={name}]').dataset.value")
        assert shown == str(days["totals"][name]), name
    assert Decimal(days["totals"]["savings_usd"]) > 0

    # the open handoff, and the budget gauge against the budget API
    assert _marks(browser, "[data-chart=handoffs] [data-value]") == [(handoff_id, handoff_id)]
    acme = site.get("/admin/budgets/acme")
    gauges = browser.evaluate(
        "[...document.querySelectorAll('[data-chart=budgets] [data-value]')]"
        ".map(e => ({...e.dataset}))"
    )
    assert len(gauges) == 1 and gauges[0]["key"] == "acme"
    assert gauges[0]["budget"] == acme["monthly_usd"] == "0.002000"
    assert gauges[0]["value"] == acme["spent_usd"] and Decimal(acme["spent_usd"]) > 0
    assert gauges[0]["reserved"] == acme["reserved_usd"]
    assert browser.errors == []

    # signing out ends the session
    browser.evaluate("document.getElementById('sign-out').click()")
    browser.wait_for("location.pathname === '/admin/login'")
    browser.navigate(f"{site.url}/admin/")
    assert browser.evaluate("location.pathname") == "/admin/login"


def test_revoking_the_key_ends_the_session(site: Site, browser: Browser) -> None:
    key = site.server.key("ops", "admin")
    assert _sign_in(browser, site, key) == "/admin/"
    mvm(site.server.workdir, "keys", "revoke", key[:10], env=site.server.env)
    browser.navigate(f"{site.url}/admin/")
    assert browser.evaluate("location.pathname") == "/admin/login"
