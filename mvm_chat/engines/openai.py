"""An engine for any OpenAI-compatible server: streamed (SSE) or whole answers over HTTP/1.1."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import msgspec

from mvm_chat import redaction
from mvm_chat.engines import http1
from mvm_chat.engines.base import (
    EngineHealth,
    Finished,
    GenerationRequest,
    StreamEvent,
    TokenDelta,
    Usage,
    estimate_tokens,
)
from mvm_chat.engines.openai_wire import (
    checked,
    choices_of,
    completion_of,
    delta_of,
    parse_body,
    parse_chunk,
    status_problem,
    transport_error,
    usage_of,
)
from mvm_chat.errors import ConfigError, EngineError
from mvm_chat.settings import ModelSettings

POOL_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=4.0)
"""Kept-alive HTTP/1.1 connections to the upstream, enough for every concurrent call; idle
ones are dropped before common servers' keep-alive timeouts (uvicorn's is 5 s) close them."""
WHOLE_TOKENS_PER_S = 10.0
"""The slowest generation a non-streamed call is sized for: an answer of up to ``timeout_s``
times this many tokens (``max_tokens``) is asked for whole, a longer one streamed."""
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""Failures before any response of a kept-alive connection that the server had closed."""


class OpenAIEngine:
    """Chat completions from an OpenAI-compatible ``base_url`` (which includes ``/v1``)."""

    kind = "openai"
    supports_choices = False
    """Whether the server can constrain an answer to ``GenerationRequest.choices``."""

    def __init__(self, config: ModelSettings) -> None:
        if not config.base_url:
            raise ConfigError("models.base_url", "required for engine 'openai'")
        self.config = config
        self._inflight = 0
        self._client: httpx.AsyncClient | None = None
        self._fast: http1.Http1Pool | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.api_key_env:
            key = redaction.remember(os.environ.get(self.config.api_key_env, ""))
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
                limits=POOL_LIMITS,
            )
        return self._client

    async def start(self) -> None:
        _ = self.client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._fast is not None:
            await self._fast.aclose()
            self._fast = None

    @property
    def queue_depth(self) -> int:
        return self._inflight

    @property
    def upstream_model(self) -> str:
        return self.config.upstream_model or self.config.name

    def _body(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.stop:
            body["stop"] = request.stop
        return body

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        if request.choices and not self.supports_choices:
            raise EngineError(f"model {self.config.name}: constrained choices are not supported")
        self._inflight += 1
        try:
            if self.asks_whole(request):
                for event in await self._whole(request):
                    yield event
            else:
                async for event in self._stream(request):
                    yield event
        finally:
            self._inflight -= 1

    def asks_whole(self, request: GenerationRequest) -> bool:
        """Whether to ask the server for the whole answer at once (``stream: false``): when
        the caller does not stream, and the answer is short enough to arrive within the read
        timeout (``timeout_s``) from a server generating :data:`WHOLE_TOKENS_PER_S`; a longer
        one is streamed, so that its bytes keep coming."""
        return (
            not request.stream and request.max_tokens <= self.config.timeout_s * WHOLE_TOKENS_PER_S
        )

    @property
    def fast(self) -> http1.Http1Pool | None:
        """The lean client for a plain-http upstream without a proxy (else None: httpx)."""
        if self._fast is None and http1.usable_for(self.config.base_url):
            self._fast = http1.Http1Pool(
                self.config.base_url,
                self._headers(),
                self.config.connect_timeout_s,
                self.config.timeout_s,
            )
        return self._fast

    async def _send(self, body: dict[str, Any]) -> httpx.Response | http1.Response:
        """POST ``body`` and read the response's headers; once more, on a new connection,
        when a kept-alive connection turns out to have been closed by the server (a failure
        within ``http1.STALE_RETRY_S``)."""
        fast = self.fast
        if fast is not None:
            return await fast.post("chat/completions", msgspec.json.encode(body))
        for attempt in range(2):
            request = self.client.build_request("POST", "chat/completions", json=body)
            sent = time.monotonic()
            try:
                return await self.client.send(request, stream=True)
            except STALE_CONNECTION:
                if attempt or time.monotonic() - sent >= http1.STALE_RETRY_S:
                    raise
        raise AssertionError("unreachable")

    async def _whole(self, request: GenerationRequest) -> list[StreamEvent]:
        """A call with ``stream: false``: the answer as one delta (none when empty), then
        :class:`Finished`."""
        name = self.config.name
        try:
            response = await self._send(self._body(request, stream=False))
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise transport_error(name, exc) from None
        if response.status_code != 200:
            raise _status_error(name, response, content)
        answer = completion_of(parse_body(content, name), name, request.messages)
        reason = checked(name, request.choices, answer.text, answer.finish_reason)
        finished = Finished(answer.usage, reason)
        if not answer.text:
            return [finished]
        tokens = max(1, answer.usage.completion_tokens)
        return [TokenDelta(answer.text, tokens, answer.logprobs), finished]

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        name = self.config.name
        usage: Usage | None = None
        finish_reason: str | None = None
        completed = False
        answer: list[str] = []
        generated = 0
        try:
            response = await self._send(self._body(request, stream=True))
            try:
                if response.status_code != 200:
                    raise _status_error(name, response, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        # read on to the end of the body, so the connection is kept for reuse
                        completed = True
                        continue
                    if completed:
                        continue
                    chunk = parse_chunk(data, name)
                    if chunk.get("usage"):
                        usage = usage_of(chunk["usage"])
                    for choice in choices_of(chunk, name):
                        delta = delta_of(choice, name)
                        if delta is not None:
                            answer.append(delta.text)
                            generated += delta.tokens
                            yield delta
                        if choice.get("finish_reason"):
                            finish_reason = str(choice["finish_reason"])
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            # after [DONE] the answer is whole: a server that then drops the connection (as
            # llama-cpp-python's does when it interrupts a stream for a waiting request)
            # costs only the connection
            if not completed:
                raise transport_error(name, exc) from None
        if not completed and finish_reason is None:
            raise EngineError(f"model {name}: upstream stream ended early")
        reason = checked(name, request.choices, "".join(answer), finish_reason or "stop")
        # Servers that ignore stream_options.include_usage (llama-cpp-python's, for one) send
        # no usage: count the streamed tokens and estimate the prompt at ~4 characters a token.
        yield Finished(usage or Usage(estimate_tokens(request.messages), generated), reason)

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


def _status_error(
    name: str, response: httpx.Response | http1.Response, content: bytes
) -> EngineError:
    """The error for a response that is not a 200, from its status and read ``content``."""
    failed = response.as_httpx(content) if isinstance(response, http1.Response) else response
    return EngineError(status_problem(name, failed))
