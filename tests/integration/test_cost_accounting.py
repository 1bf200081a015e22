"""A mixed run of chats on Postgres and Redis, then the books: every reply's ``mvm`` costs equal
its ledger rows, and ``/admin/costs/summary`` equals the sums over ``ledger_entries`` in SQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support import MODEL_TOML, REDIS_UP_TIMEOUT_S, LlamaCppServer, Server, mvm, query_db

pytestmark = pytest.mark.postgres
GROUPS = ("day", "model", "tier", "tenant", "intent")


@pytest.fixture(scope="module")
def books(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("books")
    upstream = LlamaCppServer(folder / "upstream.log").start()
    config = (
        MODEL_TOML.replace("max_tokens = 48", 'max_tokens = 32\ncpu_hour_usd = "0.05"')
        + f"""
[[tiers]]
name = "api"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "{upstream.api_base}"
upstream_model = "smol"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
max_tokens = 16

[routing]
baseline_model = "frontier"
[routing.intent_floors]
refund_request = "api"

[redis]
key_prefix = "{redis_prefix}books:"
timeout_s = {REDIS_UP_TIMEOUT_S}

[plugins.keyword_intents.rules]
refund_request = ["\\\\brefund"]
"""
    )
    env = {"MVM_CHAT_DATABASE_URL": pg_url, "MVM_CHAT_REDIS_URL": redis_url}
    mvm(folder, "db", "upgrade", env=env)
    server = Server(folder / "server", config, env=env).start()
    try:
        yield server
    finally:
        server.stop()
        upstream.stop()


def _chat(server: Server, key: str, text: str, **extra: Any) -> dict[str, Any]:
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": text}], **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["mvm"])


def _disconnect_mid_stream(server: Server, key: str) -> None:
    body = {
        "model": "frontier",
        "stream": True,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": "Write a very long poem about the sea."}],
    }
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                break  # go away after the first token


def _money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.000000001"))


def test_replies_and_summary_agree_with_the_ledger(books: Server, pg_url: str) -> None:
    acme, globex = books.key("acme"), books.key("globex")
    admin = {"Authorization": f"Bearer {books.key('ops', role='admin')}"}
    replies = [
        _chat(books, acme, "What is a debit card?"),
        _chat(books, acme, "What is a debit card?"),  # a cache hit
        _chat(books, acme, "I want a refund for my order."),  # the api tier, by the floor
        _chat(books, globex, "How do I reset my PIN?", model="frontier"),
        _chat(books, globex, "Please refund the double charge."),
        _chat(books, globex, "I want to talk to a human."),  # a handoff: no model call
    ]
    _disconnect_mid_stream(books, acme)
    assert replies[1]["cache"] == "hit" and replies[1]["cost_usd"] == "0.000000"
    assert replies[2]["tier"] == "api" and Decimal(replies[2]["cost_usd"]) > 0
    assert replies[5]["model"] == "human" and replies[5]["handoff_id"]

    for mvm_reply in replies:
        [(cost, baseline)] = query_db(
            pg_url,
            "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(baseline_cost_usd), 0) "
            "FROM ledger_entries WHERE message_id = :m",
            m=mvm_reply["message_id"],
        )
        assert mvm_reply["cost_usd"] == f"{cost:.6f}"
        assert mvm_reply["baseline_cost_usd"] == f"{baseline:.6f}"
        assert Decimal(mvm_reply["savings_usd"]) == Decimal(f"{baseline - cost:.6f}")

    for _ in range(100):  # the disconnected turn is stored in the background
        if query_db(pg_url, "SELECT 1 FROM ledger_entries WHERE status = 'client_disconnected'"):
            break
        time.sleep(0.2)
    [(count, prompt, completion, cost, baseline)] = query_db(
        pg_url,
        "SELECT count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), "
        "sum(baseline_cost_usd) FROM ledger_entries",
    )
    statuses = {s for (s,) in query_db(pg_url, "SELECT DISTINCT status FROM ledger_entries")}
    assert statuses == {"ok", "client_disconnected"}
    for group_by in GROUPS:
        summary = httpx.get(
            f"{books.url}/admin/costs/summary",
            params={"group_by": group_by},
            headers=admin,
            timeout=30,
        )
        assert summary.status_code == 200, summary.text
        body = summary.json()
        totals = body["totals"]
        assert totals["requests"] == count
        assert (totals["prompt_tokens"], totals["completion_tokens"]) == (prompt, completion)
        assert _money(totals["cost_usd"]) == _money(cost), group_by
        assert _money(totals["baseline_cost_usd"]) == _money(baseline), group_by
        assert _money(totals["savings_usd"]) == _money(baseline - cost)
        assert sum(_money(r["cost_usd"]) for r in body["rows"]) == _money(cost), group_by
        assert sum(r["requests"] for r in body["rows"]) == count
    by_model = {
        r["key"]: r
        for r in httpx.get(
            f"{books.url}/admin/costs/summary",
            params={"group_by": "model"},
            headers=admin,
            timeout=30,
        ).json()["rows"]
    }
    for model, model_cost in query_db(
        pg_url, "SELECT model, sum(cost_usd) FROM ledger_entries GROUP BY model"
    ):
        assert _money(by_model[model]["cost_usd"]) == _money(model_cost), json.dumps(by_model)
