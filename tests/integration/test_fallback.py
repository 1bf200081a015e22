"""The ladder under faults: a floor sends a turn to the API tier; when that server stops,
turns fall back with reason ``error: ...`` and no 5xx; its breaker opens, then closes again
once the server is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import MODEL_TOML, LlamaCppServer, Server


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, LlamaCppServer]]:
    folder = tmp_path_factory.mktemp("ladder")
    upstream = LlamaCppServer(folder / "upstream.log").start()
    config = (
        MODEL_TOML
        + f"""
[[tiers]]
name = "api"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "http://127.0.0.1:{upstream.port}/v1"
upstream_model = "smol"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
max_tokens = 16
connect_timeout_s = 1.0

[routing]
baseline_model = "frontier"
breaker_failures = 2
breaker_cooldown_s = 10.0
[routing.intent_floors]
refund_request = "api"

[plugins.keyword_intents.rules]
refund_request = ["\\\\brefund"]
"""
    )
    server = Server(folder / "server", config).start()
    yield server, upstream
    server.stop()
    upstream.stop()


def _ask(server: Server, key: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"},
        timeout=60,
    )


def _breaker(server: Server) -> str:
    checks = httpx.get(f"{server.url}/readyz", timeout=10).json()["checks"]
    return str(checks["engine:frontier"]["breaker"])


def test_floor_fallback_breaker_and_recovery(ladder: tuple[Server, LlamaCppServer]) -> None:
    server, upstream = ladder
    key = server.key("acme")

    floor = _ask(server, key, "I want a refund for this order.").json()["mvm"]
    assert (floor["model"], floor["tier"]) == ("frontier", "api")
    assert floor["intent"]["label"] == "refund_request"
    assert floor["escalations"] == [
        {"from": "local", "to": "api", "reason": "intent floor for refund_request"}
    ]
    assert float(floor["cost_usd"]) > 0

    upstream.stop()
    for _ in range(2):
        response = _ask(server, key, "Refund me, please.")
        assert response.status_code == 200, response.text
        mvm = response.json()["mvm"]
        assert (mvm["model"], mvm["tier"]) == ("smollm2-135m", "local")
        last = mvm["escalations"][-1]
        assert (last["from"], last["to"]) == ("api", "local")
        assert last["reason"].startswith("error: model frontier: upstream unreachable")
    assert _breaker(server) == "open"

    skipped = _ask(server, key, "Another refund question.").json()["mvm"]
    assert skipped["tier"] == "local"
    assert skipped["escalations"][-1]["reason"] == "unavailable: api"

    upstream.start()
    deadline = time.monotonic() + 60  # past the breaker's cool-down, one trial closes it
    tiers = []
    while time.monotonic() < deadline:
        tiers.append(_ask(server, key, "Still about my refund.").json()["mvm"]["tier"])
        if tiers[-1] == "api":
            break
        time.sleep(1)
    assert tiers[-1] == "api", tiers
    assert _breaker(server) == "closed"
