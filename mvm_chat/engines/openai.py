"""An engine for any OpenAI-compatible server: streaming SSE over httpx."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from mvm_chat.engines.base import (
    EngineHealth,
    Finished,
    GenerationRequest,
    StreamEvent,
    TokenDelta,
    Usage,
    estimate_tokens,
)
from mvm_chat.errors import ConfigError, EngineError
from mvm_chat.settings import ModelSettings


class OpenAIEngine:
    """Chat completions from an OpenAI-compatible ``base_url`` (which includes ``/v1``)."""

    kind = "openai"

    def __init__(self, config: ModelSettings) -> None:
        if not config.base_url:
            raise ConfigError("models.base_url", "required for engine 'openai'")
        self.config = config
        self._inflight = 0
        self._client: httpx.AsyncClient | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env, "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
            self._client = httpx.AsyncClient(
                base_url=self.config.base_url.rstrip("/") + "/",
                timeout=timeout,
                headers=self._headers(),
            )
        return self._client

    async def start(self) -> None:
        _ = self.client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def queue_depth(self) -> int:
        return self._inflight

    @property
    def upstream_model(self) -> str:
        return self.config.upstream_model or self.config.name

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = request.stop
        return body

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        if request.choices:
            raise EngineError(f"model {self.config.name}: constrained choices are not supported")
        self._inflight += 1
        try:
            async for event in self._stream(request):
                yield event
        finally:
            self._inflight -= 1

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        usage: Usage | None = None
        finish_reason: str | None = None
        completed = False
        pieces = 0
        try:
            async with self.client.stream(
                "POST", "chat/completions", json=self._body(request)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise EngineError(
                        f"model {self.config.name}: upstream answered HTTP {response.status_code}"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        completed = True
                        break
                    chunk = _parse_chunk(data, self.config.name)
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            pieces += 1
                            yield TokenDelta(text)
                        if choice.get("finish_reason"):
                            finish_reason = str(choice["finish_reason"])
        except httpx.TimeoutException:
            raise EngineError(f"model {self.config.name}: upstream timed out") from None
        except httpx.HTTPError as exc:
            raise EngineError(
                f"model {self.config.name}: upstream unreachable ({type(exc).__name__})"
            ) from None
        if not completed and finish_reason is None:
            raise EngineError(f"model {self.config.name}: upstream stream ended early")
        # Servers that ignore stream_options.include_usage (llama-cpp-python's, for one) send
        # no usage: count the streamed pieces and estimate the prompt at ~4 characters a token.
        usage = usage or Usage(estimate_tokens(request.messages), pieces)
        yield Finished(usage, finish_reason or "stop")

    async def health(self) -> EngineHealth:
        try:
            response = await self.client.get("models", timeout=self.config.connect_timeout_s)
        except httpx.HTTPError as exc:
            return EngineHealth(False, f"unreachable ({type(exc).__name__})")
        if response.status_code != 200:
            return EngineHealth(False, f"HTTP {response.status_code}")
        return EngineHealth(True)

    async def model_info(self) -> dict[str, Any]:
        return {"engine": self.kind, "upstream_model": self.upstream_model}


def _parse_chunk(data: str, name: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise EngineError(f"model {name}: upstream sent a malformed stream chunk") from None
    if not isinstance(chunk, dict):
        raise EngineError(f"model {name}: upstream sent a malformed stream chunk")
    if "error" in chunk:
        raise EngineError(f"model {name}: upstream reported an error mid-stream")
    return chunk


def _usage(raw: Any) -> Usage:
    try:
        return Usage(int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0)))
    except (AttributeError, TypeError, ValueError):
        return Usage()
