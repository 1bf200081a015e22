"""Step 7 and 8 of a turn: one call of one model, through the response cache."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from mvm_chat.cache import responses
from mvm_chat.chat.services import Services
from mvm_chat.engines.base import (
    ChatMessage,
    Finished,
    GenerationRequest,
    TokenDelta,
    Usage,
)
from mvm_chat.settings import ModelSettings


@dataclass(slots=True)
class Attempt:
    """One model call as it happens; complete once ``finished`` is set."""

    model: ModelSettings
    cache: str = "miss"
    pieces: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    ttft_s: float | None = None
    finished: Finished | None = None
    running_samples: list[int] = field(default_factory=list)
    """``running_requests`` of a shared engine, sampled as the call starts and ends."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def latency_s(self) -> float:
        return time.perf_counter() - self.started

    def add(self, delta: TokenDelta) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started
        self.pieces.append(delta.text)
        self.tokens += delta.tokens
        self.logprobs.extend(delta.logprobs)

    @property
    def running_requests(self) -> float:
        """The mean number of requests the model's server ran during the call (1 if unknown)."""
        if not self.running_samples:
            return 1.0
        return sum(self.running_samples) / len(self.running_samples)

    @property
    def confidence(self) -> float | None:
        """The geometric-mean token probability of the answer, when the engine reports
        token log-probabilities."""
        if not self.logprobs:
            return None
        return math.exp(sum(self.logprobs) / len(self.logprobs))


def request_for(
    model: ModelSettings,
    prompt: list[ChatMessage],
    max_tokens: int | None,
    temperature: float | None,
    stream: bool = True,
) -> GenerationRequest:
    """The engine request for ``prompt`` on ``model``: the caller's limits, else the model's."""
    return GenerationRequest(
        messages=prompt,
        max_tokens=max_tokens or model.max_tokens,
        temperature=model.temperature if temperature is None else temperature,
        stream=stream,
    )


async def generate(
    services: Services,
    attempt: Attempt,
    request: GenerationRequest,
    tenant_id: str,
    use_cache: bool,
    served: responses.Served | None = None,
) -> AsyncGenerator[TokenDelta, None]:
    """Stream one call's tokens into ``attempt`` (and to the caller): ``served`` when the turn
    already has the answer, else the exact cache's when the same tenant asked the same model
    the same prompt before, else the model's."""
    key = responses.response_key(tenant_id, attempt.model.name, request) if use_cache else ""
    cached: responses.CachedAnswer | None = None
    if served is not None:
        attempt.cache, cached = served.cache, served.answer
    elif use_cache:
        raw = await services.cache.get(key)
        cached = responses.decode(raw) if raw is not None else None
        attempt.cache = "hit" if cached else "miss"
    else:
        attempt.cache = "bypass"
    services.metrics.series(services.metrics.cache, attempt.cache).inc()
    if cached is not None:
        delta = TokenDelta(cached.text, cached.usage.completion_tokens)
        attempt.add(delta)
        attempt.finished = Finished(cached.usage, "stop")
        yield delta
        return
    engine = services.engines[attempt.model.name]
    # SharedEngine.running_requests, looked up directly (an isinstance check on a runtime
    # Protocol inspects every member of the class on every call)
    running: Callable[[], int] | None = getattr(engine, "running_requests", None)
    async with aclosing(engine.stream(request)) as stream:
        async for event in stream:
            if isinstance(event, TokenDelta):
                if running is not None and not attempt.running_samples:
                    attempt.running_samples.append(running())
                attempt.add(event)
                yield event
            else:
                attempt.finished = event
    if running is not None:
        attempt.running_samples.append(running())
    finished = attempt.finished
    if use_cache and finished and attempt.text and finished.finish_reason in ("stop", "length"):
        answer = responses.CachedAnswer(attempt.text, finished.usage)
        await services.cache.set(key, responses.encode(answer), services.settings.chat.cache_ttl_s)


def usage_of(attempt: Attempt, prompt_estimate: int) -> Usage:
    """Exact usage of a finished call; for an interrupted one, what was generated so far."""
    if attempt.finished is not None:
        return attempt.finished.usage
    return Usage(prompt_estimate, attempt.tokens)
