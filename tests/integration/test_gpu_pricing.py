"""GPU-time pricing of SGLang calls: the wall time is shared among the requests the server
runs at the time (``sglang:num_running_reqs``), against the SGLang stand-in."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.conftest import standin_model
from tests.support import Server, until


def _config(standin: str) -> str:
    gpu = standin_model(standin, "gpu-smol", "gpu", None, 0.05, gpu_hour_usd="3600", gpus=2)
    return f"""
[[tiers]]
name = "gpu"
{gpu}
[routing]
default_tier = "gpu"
"""


def _cost_per_second(server: Server, key: str, text: str) -> Decimal:
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"},
        json={"model": "gpu-smol", "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    message_id = reply.json()["mvm"]["message_id"]
    with sqlite3.connect(server.workdir / "var" / "mvm_chat.db") as db:
        cost, latency_ms = db.execute(
            "SELECT cost_usd, latency_ms FROM ledger_entries WHERE message_id = ?", (message_id,)
        ).fetchone()
    assert reply.json()["mvm"]["cost_usd"] == f"{Decimal(str(cost)):.6f}"
    return Decimal(str(cost)) / (Decimal(latency_ms) / 1000)


def _until_scraped(server: Server, admin: str, running: int) -> None:
    """Wait until the server's last scrape of the stand-in's ``/metrics`` saw ``running``
    requests run."""

    def scraped() -> bool:
        rows = httpx.get(
            f"{server.url}/admin/models", headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ).json()
        load = next(r for r in rows if r["name"] == "gpu-smol")["info"]["load"]
        return not load["stale"] and load["num_running_reqs"] == running

    until(scraped, f"no scrape saw {running} running requests")


def test_concurrent_requests_share_the_gpu_time(
    standin: str, script: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = Server(tmp_path_factory.mktemp("gpu-pricing"), _config(standin)).start()
    try:
        key, admin = server.key("acme"), server.key("ops", role="admin")
        script(token_delay_s=0.1)
        _until_scraped(server, admin, 0)
        alone = _cost_per_second(server, key, "Just me, please.")
        # 2 USD per second of wall time for 2 GPUs at 3600 USD an hour, all of it ours
        assert Decimal("1.8") < alone < Decimal("2.2")
        script(token_delay_s=0.1, num_running_reqs=3)  # three other requests run meanwhile
        _until_scraped(server, admin, 3)
        shared = _cost_per_second(server, key, "Now with company.")
        # The share is the mean of two samples, at the first token and at the end, each the
        # scraped count: 4 (the three and ours), or 3 if no scrape has seen ours start yet.
        assert Decimal("2.9") < alone / shared < Decimal("4.1")
    finally:
        server.stop()
