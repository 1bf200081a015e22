"""mvm_chat serving SGLang models: the ``gpu`` tier through the stand-in server
(``tests/sglang_standin.py``), and auto-routing on its scraped queue depth."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import SERVED, seen, standin_model
from tests.support import MODEL_TOML, Server

GENEROUS_S = 30.0
"""Waits for what must succeed, on a slow machine too."""


def test_a_server_answers_with_the_gpu_tier(
    standin: str, script: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gpu = standin_model(
        standin, "gpu-smol", "gpu", max_tokens=None, metrics_interval_s=1.0, gpu_hour_usd="2.50"
    )
    config = MODEL_TOML + '\n[[tiers]]\nname = "gpu"\n' + gpu
    server = Server(tmp_path_factory.mktemp("sglang-tier"), config).start()
    try:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key("acme"), max_retries=0)
        resp = sdk.chat.completions.create(
            model="gpu-smol", messages=[{"role": "user", "content": "Where is my new card?"}]
        )
        assert resp.choices[0].message.content == "You said: Where is my new card?"
        mvm = resp.model_extra["mvm"]
        assert mvm["tier"] == "gpu" and mvm["model"] == "gpu-smol" == resp.model
        assert mvm["usage"]["completion_tokens"] == 7
        chunks = list(
            sdk.chat.completions.create(
                model="gpu-smol",
                messages=[{"role": "user", "content": "Stream it, please."}],
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "You said: Stream it, please."
        assert chunks[-1].model_extra["mvm"]["tier"] == "gpu"
        bodies = seen(standin, "/v1/chat/completions")
        assert all(b["model"] == SERVED and b["logprobs"] is True for b in bodies)
        # streamed upstream only when the client streams
        assert [b["stream"] for b in bodies] == [False, True]

        admin = {"Authorization": f"Bearer {server.key('acme', role='admin')}"}
        rows = httpx.get(f"{server.url}/admin/models", headers=admin, timeout=30).json()
        row = next(r for r in rows if r["name"] == "gpu-smol")
        assert row["healthy"] and row["engine"] == "sglang"
        assert row["info"]["sglang_version"] == "0.5.9" and row["info"]["tp_size"] == 1
    finally:
        server.stop()


def test_sglang_queue_depth_bursts_auto_routing_one_tier_up(
    standin: str, script: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = f"""
[[tiers]]
name = "gpu"
[[tiers]]
name = "moe"
{standin_model(standin, "gpu-smol", "gpu", None, 0.2, max_queue=4)}
{standin_model(standin, "moe-smol", "moe", None, 0.2, max_queue=1000)}
[routing]
default_tier = "gpu"
"""
    server = Server(tmp_path_factory.mktemp("sglang-capacity"), config).start()
    try:
        key = server.key("acme")

        def ask() -> dict[str, Any]:
            response = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            return dict(response.json()["mvm"])

        assert ask()["tier"] == "gpu"
        script(num_queue_reqs=6, num_running_reqs=2)
        deadline = time.monotonic() + GENEROUS_S
        mvm = ask()
        while mvm["tier"] != "moe" and time.monotonic() < deadline:
            time.sleep(0.3)  # the next scrape of /metrics
            mvm = ask()
        assert mvm["tier"] == "moe"
        assert mvm["escalations"] == [
            {"from": "gpu", "to": "moe", "reason": "capacity: queue 8 > 4"}
        ]
    finally:
        server.stop()
