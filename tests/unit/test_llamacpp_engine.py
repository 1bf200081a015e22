"""The llamacpp engine on the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from mvm_chat.engines.base import ChatMessage, Finished, GenerationRequest, TokenDelta
from mvm_chat.engines.llamacpp import LlamaCppEngine, resolve_model_path
from mvm_chat.errors import ConfigError, InvalidInput
from mvm_chat.settings import ModelSettings


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    config = ModelSettings(
        name="smollm2-135m",
        tier="local",
        engine="llamacpp",
        path="builtin:smollm2-135m",
        context_length=512,
    )
    engine = LlamaCppEngine(config)
    await engine.start()
    yield engine
    await engine.close()


def _ask(text: str, max_tokens: int = 24) -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatMessage("system", "Be brief."), ChatMessage("user", text)],
        max_tokens=max_tokens,
        temperature=0.0,
    )


async def _collect(engine: LlamaCppEngine, request: GenerationRequest) -> tuple[str, Finished]:
    pieces: list[str] = []
    tokens = 0
    async for event in engine.stream(request):
        if isinstance(event, TokenDelta):
            pieces.append(event.text)
            tokens += event.tokens
        else:
            assert tokens == event.usage.completion_tokens, "deltas account for every token"
            return "".join(pieces), event
    raise AssertionError("stream ended without Finished")


def test_builtin_path_resolves_inside_the_wheel() -> None:
    path = resolve_model_path("builtin:smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    with pytest.raises(ConfigError):
        resolve_model_path("builtin:nonexistent")


async def test_streams_tokens_with_exact_usage(engine: LlamaCppEngine) -> None:
    text, finished = await _collect(engine, _ask("What is two plus two?"))
    assert text.strip()
    assert finished.usage.prompt_tokens > 10
    assert 0 < finished.usage.completion_tokens <= 24
    assert finished.finish_reason in ("stop", "length")
    assert "<|im_end|>" not in text


async def test_max_tokens_limits_the_answer(engine: LlamaCppEngine) -> None:
    _, finished = await _collect(engine, _ask("Write a long story about a dragon.", 5))
    assert finished.usage.completion_tokens == 5
    assert finished.finish_reason == "length"


async def test_greedy_generation_is_repeatable(engine: LlamaCppEngine) -> None:
    first, _ = await _collect(engine, _ask("Name three fruits."))
    second, _ = await _collect(engine, _ask("Name three fruits."))
    assert first == second


async def test_requests_queue_one_at_a_time(engine: LlamaCppEngine) -> None:
    results = await asyncio.gather(*[_collect(engine, _ask(f"Say {n}.", 8)) for n in range(3)])
    assert all(finished.usage.completion_tokens > 0 for _, finished in results)
    assert engine.queue_depth == 0


async def test_queue_depth_counts_waiting_requests(engine: LlamaCppEngine) -> None:
    tasks = [asyncio.create_task(_collect(engine, _ask("Tell a tale.", 64))) for _ in range(3)]
    seen = 0
    while not all(t.done() for t in tasks):
        seen = max(seen, engine.queue_depth)
        await asyncio.sleep(0.005)
    assert seen == 3, "all three requests were queued at once"
    await asyncio.gather(*tasks)
    assert engine.queue_depth == 0


async def test_closing_the_stream_stops_generation(engine: LlamaCppEngine) -> None:
    async with aclosing(engine.stream(_ask("Count to one hundred.", 200))) as stream:
        async for event in stream:
            assert isinstance(event, TokenDelta)
            break
    # the worker is free again: a new request completes promptly
    _, finished = await asyncio.wait_for(_collect(engine, _ask("Hi.", 4)), timeout=30)
    assert finished.usage.completion_tokens > 0


async def test_long_history_is_trimmed_to_fit(engine: LlamaCppEngine) -> None:
    history = [ChatMessage("user" if i % 2 == 0 else "assistant", "blah " * 60) for i in range(12)]
    request = GenerationRequest(
        messages=[ChatMessage("system", "Be brief."), *history, ChatMessage("user", "Hi?")],
        max_tokens=8,
    )
    _, finished = await _collect(engine, request)
    assert finished.usage.prompt_tokens + 8 <= 512


async def test_a_prompt_longer_than_the_context_is_invalid_input(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(messages=[ChatMessage("user", "word " * 2000)], max_tokens=8)
    with pytest.raises(InvalidInput) as info:
        await _collect(engine, request)
    assert info.value.field == "messages"


async def test_health_and_model_info(engine: LlamaCppEngine) -> None:
    assert (await engine.health()).ok
    info = await engine.model_info()
    assert info["architecture"] == "llama"
    assert 100_000_000 < info["parameters"] < 200_000_000


async def test_choices_constrain_the_answer_and_report_its_probability(
    engine: LlamaCppEngine,
) -> None:
    labels = ("card_arrival", "close_account", "exchange_rate")
    for text in ("I want to close my account", "What is the euro exchange rate today?"):
        request = GenerationRequest(
            messages=[ChatMessage("system", "Reply with one category."), ChatMessage("user", text)],
            max_tokens=16,
            temperature=0.0,
            choices=labels,
        )
        pieces, logprobs = [], []
        async for event in engine.stream(request):
            if isinstance(event, TokenDelta):
                pieces.append(event.text)
                logprobs.extend(event.logprobs)
        assert "".join(pieces) in labels
        assert all(lp <= 0 for lp in logprobs) and logprobs
        assert 0 < math.exp(sum(logprobs)) <= 1


async def test_free_text_reports_a_logprob_per_token(engine: LlamaCppEngine) -> None:
    logprobs: list[float] = []
    async for event in engine.stream(_ask("Say hi.", 6)):
        if isinstance(event, TokenDelta):
            assert len(event.logprobs) == event.tokens
            logprobs.extend(event.logprobs)
    assert logprobs and all(lp <= 0 for lp in logprobs)
