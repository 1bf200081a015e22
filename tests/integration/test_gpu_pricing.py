"""GPU-time pricing of SGLang calls: the wall time is shared among the requests the server
runs at the time (``sglang:num_running_reqs``), against the SGLang stand-in."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.conftest import SERVED
from tests.support import Server


def _config(standin: str) -> str:
    return f"""
[[tiers]]
name = "gpu"

[[models]]
name = "gpu-smol"
tier = "gpu"
engine = "sglang"
base_url = "{standin}"
upstream_model = "{SERVED}"
gpu_hour_usd = "3600"
gpus = 2
metrics_interval_s = 0.05

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


def test_concurrent_requests_share_the_gpu_time(
    standin: str, script: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = Server(tmp_path_factory.mktemp("gpu-pricing"), _config(standin)).start()
    try:
        key = server.key("acme")
        script(token_delay_s=0.1)
        time.sleep(1.0)  # scrapes (every 0.05 s) after the reset
        alone = _cost_per_second(server, key, "Just me, please.")
        # 2 USD per second of wall time for 2 GPUs at 3600 USD an hour, all of it ours
        assert Decimal("1.8") < alone < Decimal("2.2")
        script(token_delay_s=0.1, num_running_reqs=3)  # three other requests run meanwhile
        time.sleep(1.0)
        shared = _cost_per_second(server, key, "Now with company.")
        assert Decimal("3.5") < alone / shared < Decimal("4.5")
    finally:
        server.stop()
