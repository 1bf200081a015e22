"""The openai engine against a real OpenAI-compatible server: llama-cpp-python's own."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from mvm_chat.engines.base import ChatMessage, Finished, GenerationRequest, TokenDelta
from mvm_chat.engines.openai import OpenAIEngine
from mvm_chat.errors import EngineError
from mvm_chat.settings import ModelSettings
from tests.support import MODEL_TOML, LlamaCppServer, Server, free_port


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with SmolLM2 on 127.0.0.1; yields its API base."""
    server = LlamaCppServer(tmp_path_factory.mktemp("llama-server") / "server.log").start()
    yield server.api_base
    server.stop()


def _config(base_url: str, connect_timeout_s: float = 5.0) -> ModelSettings:
    return ModelSettings(
        name="remote-smol",
        tier="api",
        engine="openai",
        base_url=base_url,
        upstream_model="smol",
        api_key_env="REMOTE_KEY",
        connect_timeout_s=connect_timeout_s,
    )


@pytest.fixture
async def engine(upstream: str) -> AsyncIterator[OpenAIEngine]:
    engine = OpenAIEngine(_config(upstream))
    await engine.start()
    yield engine
    await engine.close()


REQUEST = GenerationRequest(
    messages=[ChatMessage("user", "Say hello to the world.")], max_tokens=12, temperature=0.0
)


async def test_streams_tokens_from_the_server(engine: OpenAIEngine) -> None:
    events = [event async for event in engine.stream(REQUEST)]
    tokens = [e for e in events if isinstance(e, TokenDelta)]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert len(tokens) >= 2 and "".join(t.text for t in tokens).strip()
    assert finished.usage.completion_tokens == len(tokens) <= 12
    assert finished.usage.prompt_tokens > 0
    assert finished.finish_reason in ("stop", "length")
    assert engine.queue_depth == 0


async def test_a_caller_that_does_not_stream_gets_the_answer_whole(
    engine: OpenAIEngine,
) -> None:
    request = GenerationRequest(REQUEST.messages, REQUEST.max_tokens, 0.0, stream=False)
    events = [event async for event in engine.stream(request)]
    [delta, finished] = events
    assert isinstance(delta, TokenDelta) and isinstance(finished, Finished)
    assert delta.text.strip() and 1 <= finished.usage.completion_tokens <= 12
    assert delta.tokens == finished.usage.completion_tokens
    assert finished.usage.prompt_tokens > 0 and finished.finish_reason in ("stop", "length")
    # the same answer as streamed (temperature 0, same server)
    streamed = [e async for e in engine.stream(REQUEST) if isinstance(e, TokenDelta)]
    assert "".join(e.text for e in streamed) == delta.text
    assert engine.queue_depth == 0


async def test_constrained_choices_are_refused(engine: OpenAIEngine) -> None:
    request = GenerationRequest(messages=REQUEST.messages, choices=("a", "b"))
    with pytest.raises(EngineError):
        [event async for event in engine.stream(request)]


async def test_health(engine: OpenAIEngine) -> None:
    assert (await engine.health()).ok


async def test_unreachable_server_is_an_engine_error() -> None:
    engine = OpenAIEngine(_config(f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1.0))
    with pytest.raises(EngineError) as info:
        [event async for event in engine.stream(REQUEST)]
    assert "unreachable" in str(info.value)
    assert not (await engine.health()).ok
    await engine.close()


async def test_upstream_http_error_is_an_engine_error(upstream: str) -> None:
    engine = OpenAIEngine(_config(upstream.removesuffix("/v1") + "/nowhere"))
    with pytest.raises(EngineError) as info:
        [event async for event in engine.stream(REQUEST)]
    assert "HTTP 404" in str(info.value)
    await engine.close()


async def test_api_key_is_sent_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch, upstream: str
) -> None:
    monkeypatch.setenv("REMOTE_KEY", "sk-test-secret")
    engine = OpenAIEngine(_config(upstream))
    assert engine.client.headers["authorization"] == "Bearer sk-test-secret"
    await engine.close()


@pytest.fixture(scope="module")
def two_tier_server(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = (
        MODEL_TOML
        + f"""
[[tiers]]
name = "api"

[[models]]
name = "remote-smol"
tier = "api"
engine = "openai"
base_url = "{upstream}"
upstream_model = "smol"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
max_tokens = 16

[routing]
baseline_model = "remote-smol"
"""
    )
    server = Server(tmp_path_factory.mktemp("two-tier"), config).start()
    yield server
    server.stop()


def test_named_remote_model_through_the_gateway(two_tier_server: Server) -> None:
    key = two_tier_server.key("acme")
    sdk = openai.OpenAI(base_url=f"{two_tier_server.url}/v1", api_key=key, max_retries=0)
    resp = sdk.chat.completions.create(
        model="remote-smol", messages=[{"role": "user", "content": "Hello!"}]
    )
    mvm = resp.model_extra["mvm"]
    assert (mvm["model"], mvm["tier"]) == ("remote-smol", "api")
    assert resp.choices[0].message.content
    assert float(mvm["cost_usd"]) > 0 and mvm["cost_usd"] == mvm["baseline_cost_usd"]

    local = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hello!"}]
    )
    local_mvm = local.model_extra["mvm"]
    assert local_mvm["tier"] == "local" and local_mvm["cost_usd"] == "0.000000"
    assert float(local_mvm["baseline_cost_usd"]) > 0
    assert local_mvm["savings_usd"] == local_mvm["baseline_cost_usd"]
    ids = [m.id for m in sdk.models.list()]
    assert ids == ["auto", "smollm2-135m", "remote-smol"]


def test_remote_failure_is_a_problem_and_a_failed_ledger_row(two_tier_server: Server) -> None:
    key = two_tier_server.key("acme")
    # a prompt longer than the upstream's context makes llama.cpp's server answer an error
    response = httpx.post(
        f"{two_tier_server.url}/v1/chat/completions",
        json={"model": "remote-smol", "messages": [{"role": "user", "content": "word " * 5000}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 502, response.text
    assert "remote-smol" in response.json()["detail"]
    with sqlite3.connect(two_tier_server.workdir / "var" / "mvm_chat.db") as db:
        statuses = [
            r[0]
            for r in db.execute("SELECT status FROM ledger_entries WHERE model = 'remote-smol'")
        ]
    assert "error" in statuses
