"""The sglang engine against a stand-in server that speaks SGLang 0.5.9's HTTP protocol
(``tests/sglang_standin.py``), run as a real process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mvm_chat.engines.base import ChatMessage, Finished, GenerationRequest, TokenDelta
from mvm_chat.engines.sglang import SglangEngine
from mvm_chat.errors import EngineError
from mvm_chat.settings import ModelSettings
from tests.integration.conftest import SERVED, seen
from tests.support import free_port

GENEROUS_S = 30.0
"""Timeouts and waits for what must succeed, on a slow machine too (the stand-in's health
check alone takes a second, like SGLang's)."""


def _timeout_for(fault: str) -> float:
    """Short where the call must time out (the stand-in hangs or stalls), else generous."""
    return 1.0 if fault in ("hang", "stall") else GENEROUS_S


def _config(base_url: str, **overrides: Any) -> ModelSettings:
    settings: dict[str, Any] = {
        "name": "gpu-smol",
        "tier": "gpu",
        "engine": "sglang",
        "base_url": base_url,
        "upstream_model": SERVED,
        "timeout_s": GENEROUS_S,
        "connect_timeout_s": GENEROUS_S,
        "metrics_interval_s": 0.0,
        **overrides,
    }
    return ModelSettings(**settings)


@pytest.fixture
async def engine(standin: str, script: Any) -> AsyncIterator[SglangEngine]:
    engine = SglangEngine(_config(standin))
    await engine.start()
    yield engine
    await engine.close()


REQUEST = GenerationRequest(
    messages=[ChatMessage("user", "Say hello to the world.")], max_tokens=12, temperature=0.0
)


async def test_streams_chat_with_token_logprobs(engine: SglangEngine, standin: str) -> None:
    events = [event async for event in engine.stream(REQUEST)]
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "stop"
    assert "".join(d.text for d in deltas) == "You said: Say hello to the world."
    assert len(deltas) == 7 and all(len(d.logprobs) == d.tokens == 1 for d in deltas)
    assert all(-1 < lp <= 0 for d in deltas for lp in d.logprobs)
    assert finished.usage.completion_tokens == 7 and finished.usage.prompt_tokens > 0
    assert engine.queue_depth == 0
    [body] = seen(standin, "/v1/chat/completions")
    assert body["model"] == SERVED and body["stream"] is True and body["logprobs"] is True
    assert body["stream_options"] == {"include_usage": True} and "regex" not in body


async def test_non_streaming_chat(engine: SglangEngine, standin: str) -> None:
    answer = await engine.complete(REQUEST)
    assert answer.text == "You said: Say hello to the world."
    assert answer.finish_reason == "stop"
    assert len(answer.logprobs) == answer.usage.completion_tokens == 7
    [body] = seen(standin, "/v1/chat/completions")
    assert body["stream"] is False and "stream_options" not in body


async def test_a_caller_that_does_not_stream_gets_the_answer_whole(
    engine: SglangEngine, standin: str
) -> None:
    request = GenerationRequest(messages=REQUEST.messages, max_tokens=12, stream=False)
    events = [event async for event in engine.stream(request)]
    [delta, finished] = events
    assert isinstance(delta, TokenDelta) and isinstance(finished, Finished)
    assert delta.text == "You said: Say hello to the world."
    assert len(delta.logprobs) == delta.tokens == finished.usage.completion_tokens == 7
    assert finished.finish_reason == "stop" and engine.queue_depth == 0
    [body] = seen(standin, "/v1/chat/completions")
    assert body["stream"] is False and "stream_options" not in body and body["logprobs"] is True


async def test_a_long_answer_is_streamed_though_the_caller_does_not_stream(
    engine: SglangEngine, standin: str
) -> None:
    """Asked for whole, an answer arrives only when generated: past what the read timeout
    allows at 10 tokens/s, it is streamed so that its bytes keep coming."""
    longest = int(engine.config.timeout_s * 10)
    for max_tokens in (longest, longest + 1):
        request = GenerationRequest(REQUEST.messages, max_tokens=max_tokens, stream=False)
        events = [event async for event in engine.stream(request)]
        assert "".join(e.text for e in events if isinstance(e, TokenDelta)) == (
            "You said: Say hello to the world."
        )
    assert [b["stream"] for b in seen(standin, "/v1/chat/completions")] == [False, True]


async def test_a_low_logprob_reaches_the_caller(engine: SglangEngine, script: Any) -> None:
    script(logprob=-3.5)
    events = [event async for event in engine.stream(REQUEST)]
    assert {lp for e in events if isinstance(e, TokenDelta) for lp in e.logprobs} == {-3.5}


@pytest.mark.parametrize(
    ("question", "choices", "expected"),
    [
        ("Does this answer the question? Answer yes or no: no", ("yes", "no"), "no"),
        ("Classify: card arrival is late.", ("billing", "card arrival", "top-up?"), "card arrival"),
    ],
)
async def test_constrained_choice_through_the_regex_field(
    engine: SglangEngine, standin: str, question: str, choices: tuple[str, ...], expected: str
) -> None:
    request = GenerationRequest(messages=[ChatMessage("user", question)], choices=choices)
    events = [event async for event in engine.stream(request)]
    assert "".join(e.text for e in events if isinstance(e, TokenDelta)) == expected
    [body] = seen(standin, "/v1/chat/completions")
    assert body["regex"] in ("(yes|no)", r"(billing|card arrival|top-up\?)")


async def test_native_generate_with_regex_and_logprobs(engine: SglangEngine, standin: str) -> None:
    prompt = "<|im_start|>user\nClassify: card arrival is late.<|im_end|>\n<|im_start|>assistant\n"
    result = await engine.generate(prompt, choices=("billing", "card arrival"), max_new_tokens=8)
    assert result.text == "card arrival" and result.finish_reason == "stop"
    assert len(result.logprobs) == result.usage.completion_tokens == 2
    assert result.usage.prompt_tokens > 0
    [body] = seen(standin, "/generate")
    assert body["text"] == prompt and body["return_logprob"] is True
    assert body["sampling_params"] == {
        "max_new_tokens": 8,
        "temperature": 0.0,
        "regex": "(billing|card arrival)",
    }


async def test_native_generate_with_a_json_schema(engine: SglangEngine) -> None:
    schema = {"type": "object", "properties": {"intent": {"enum": ["billing", "other"]}}}
    result = await engine.generate("Classify: my bill is wrong", json_schema=schema)
    assert result.text == '{"intent": "billing"}'


async def test_health(engine: SglangEngine) -> None:
    health = await engine.health()
    assert health.ok, health.detail


async def test_a_hanging_health_check_is_unhealthy_within_the_timeout(
    standin: str, script: Any
) -> None:
    script(faults={"health": "hang"})
    engine = SglangEngine(_config(standin, connect_timeout_s=1.5))
    started = time.monotonic()
    health = await engine.health()
    assert not health.ok and "did not answer within 1.5s" in health.detail
    # well before timeout_s (30 s): the health check keeps to connect_timeout_s
    assert time.monotonic() - started < 1.5 + 10
    await engine.close()


async def test_a_503_health_check_is_unhealthy(engine: SglangEngine, script: Any) -> None:
    script(faults={"health": "status:503"})
    health = await engine.health()
    assert not health.ok and "HTTP 503" in health.detail


async def test_model_info(engine: SglangEngine) -> None:
    info = await engine.model_info()
    assert info["engine"] == "sglang" and "error" not in info
    assert info["model_path"] == "HuggingFaceTB/SmolLM3-3B"
    assert info["architectures"] == ["SmolLM3ForCausalLM"] and info["model_type"] == "smollm3"
    assert info["served_model_name"] == SERVED and info["sglang_version"] == "0.5.9"
    assert info["tp_size"] == 1 and info["max_total_num_tokens"] == 20480
    assert info["load"]["queue_depth"] == 0


async def test_model_info_on_versions_before_the_rename(
    engine: SglangEngine, standin: str, script: Any
) -> None:
    script(faults={"model_info": "legacy", "server_info": "legacy"})
    info = await engine.model_info()
    assert info["model_path"] == "HuggingFaceTB/SmolLM3-3B" and "error" not in info
    paths = [r["path"] for r in httpx.get(f"{standin}/_standin/requests").json()]
    assert paths == ["/model_info", "/get_model_info", "/server_info", "/get_server_info"]


async def test_model_info_of_a_server_that_is_down() -> None:
    engine = SglangEngine(_config(f"http://127.0.0.1:{free_port()}"))
    info = await engine.model_info()
    assert "unreachable" in info["error"] and info["load"]["stale"] is True
    await engine.close()


async def _until(condition: Any, timeout_s: float = GENEROUS_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_metrics_scraping_gives_queue_depth_and_load(standin: str, script: Any) -> None:
    script(num_queue_reqs=3, num_running_reqs=4, token_usage=0.5, gen_throughput=120.5)
    engine = SglangEngine(_config(standin, metrics_interval_s=0.2))
    await engine.start()
    try:
        await _until(lambda: not engine.load().stale)
        load = engine.load()
        assert (load.num_queue_reqs, load.num_running_reqs) == (3, 4)
        assert (load.token_usage, load.gen_throughput) == (0.5, 120.5)
        assert engine.queue_depth == 7 and load.scraped_at is not None

        script(faults={"metrics": "status:500"})
        await _until(lambda: engine.load().stale)
        stale = engine.load()
        assert "HTTP 500" in stale.detail and stale.scraped_at == load.scraped_at
        assert engine.queue_depth == 7, "a failed scrape keeps the last values"

        script(faults={"metrics": "garbage"})
        await _until(lambda: "not Prometheus" in engine.load().detail)
        script(faults={"metrics": ""}, num_queue_reqs=0, num_running_reqs=1)
        await _until(lambda: not engine.load().stale)
        assert engine.queue_depth == 1
    finally:
        await engine.close()


async def test_own_calls_are_the_floor_of_queue_depth(engine: SglangEngine, script: Any) -> None:
    script(token_delay_s=0.3)
    stream = engine.stream(REQUEST)
    first = await anext(stream)
    assert isinstance(first, TokenDelta) and engine.queue_depth == 1
    await stream.aclose()
    assert engine.queue_depth == 0


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("status:429", "HTTP 429"),
        ("status:503", "HTTP 503"),
        ("garbage", "ended early"),
        ("garbage_chunk", "malformed stream chunk"),
        ("truncate", "ended early"),
        ("drop", "connection failed"),
        ("hang", "timed out"),
        ("stall", "timed out"),
    ],
)
async def test_chat_faults_are_engine_errors(
    standin: str, script: Any, fault: str, says: str
) -> None:
    script(faults={"chat": fault})
    engine = SglangEngine(_config(standin, timeout_s=_timeout_for(fault)))
    with pytest.raises(EngineError) as info:
        [event async for event in engine.stream(REQUEST)]
    assert says in str(info.value)
    assert engine.queue_depth == 0
    await engine.close()


async def test_an_error_event_in_the_stream_is_an_engine_error(engine: SglangEngine) -> None:
    request = GenerationRequest(messages=REQUEST.messages, temperature=-1.0)
    with pytest.raises(EngineError) as info:
        [event async for event in engine.stream(request)]
    assert "error mid-stream" in str(info.value)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("status:429", "HTTP 429"),
        ("status:500", "HTTP 500"),
        ("garbage", "not JSON"),
        ("hang", "timed out"),
        ("drop", "connection failed"),
    ],
)
async def test_native_and_non_streamed_faults_are_engine_errors(
    standin: str, script: Any, fault: str, says: str
) -> None:
    script(faults={"generate": fault, "chat": fault})
    engine = SglangEngine(_config(standin, timeout_s=_timeout_for(fault)))
    for call in (engine.generate("Hello", max_new_tokens=4), engine.complete(REQUEST)):
        with pytest.raises(EngineError) as info:
            await call
        assert says in str(info.value)
    await engine.close()


async def test_a_rejected_request_says_why(engine: SglangEngine) -> None:
    with pytest.raises(EngineError) as info:
        await engine.generate("Hello", regex="(unclosed")
    assert "HTTP 400" in str(info.value) and "Invalid grammar" in str(info.value)


async def test_an_unreachable_server_is_an_engine_error() -> None:
    engine = SglangEngine(_config(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(EngineError) as info:
        [event async for event in engine.stream(REQUEST)]
    assert "unreachable" in str(info.value)
    with pytest.raises(EngineError):
        await engine.generate("Hello")
    health = await engine.health()
    assert not health.ok and "unreachable" in health.detail
    await engine.close()
