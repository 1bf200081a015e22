"""A stand-in OpenAI-compatible upstream for the gateway benchmark: as cheap as a server can be.

    .venv/bin/python bench/upstream.py --port 8101 [--tokens 16 --delay-ms 5]

A plain ``asyncio.Protocol`` HTTP/1.1 server with keep-alive (uvloop when installed), so that it
is never the bottleneck. ``POST /v1/chat/completions`` answers a fixed completion with usage;
with ``"stream": true`` it sends the answer as Server-Sent Events in OpenAI's chunk format
(role chunk, content chunks, a finish chunk, a usage chunk when ``stream_options.include_usage``,
then ``data: [DONE]``). Requests for the model named by ``--paced-model`` (default ``paced``)
stream ``--tokens`` tokens ``--delay-ms`` apart (the first token at once); any other model
streams the fixed answer's tokens with no delay. ``GET /v1/models`` and ``GET /health`` answer
too. Each request's body is parsed as JSON, as a real server would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

ANSWER_TOKENS = ["This", " is", " a", " fixed", " answer", " from", " the", " bench", " upstream."]
PROMPT_TOKENS = 24
MAX_HEADER = 64 * 1024


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(body: dict[str, Any] | str) -> bytes:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return _chunked(b"data: " + text.encode() + b"\n\n")


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)
NOT_FOUND = _response(
    "404 Not Found", b'{"error":{"message":"not found","type":"invalid_request"}}'
)
BAD_REQUEST = _response(
    "400 Bad Request", b'{"error":{"message":"invalid JSON body","type":"invalid_request"}}'
)
HEALTH = _response("200 OK", b'{"status":"ok"}')


class Upstream:
    """What the server answers; the completed bodies are built once per model name."""

    def __init__(self, paced_model: str, tokens: int, delay_s: float) -> None:
        self.paced_model = paced_model
        self.paced_tokens = [f" tok{i}" for i in range(tokens)]
        self.delay_s = delay_s
        self._completions: dict[str, bytes] = {}
        self._streams: dict[tuple[str, bool], tuple[list[bytes], bytes]] = {}
        self.created = int(time.time())

    def models(self) -> bytes:
        data = [
            {"id": name, "object": "model", "created": self.created, "owned_by": "bench"}
            for name in ("bench", self.paced_model)
        ]
        return _response("200 OK", json.dumps({"object": "list", "data": data}).encode())

    def completion(self, model: str) -> bytes:
        cached = self._completions.get(model)
        if cached is None:
            body = {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": self.created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(ANSWER_TOKENS),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": len(ANSWER_TOKENS),
                    "total_tokens": PROMPT_TOKENS + len(ANSWER_TOKENS),
                },
                "system_fingerprint": None,
            }
            cached = _response("200 OK", json.dumps(body, separators=(",", ":")).encode())
            if len(self._completions) < 64:
                self._completions[model] = cached
        return cached

    def stream_events(self, model: str, include_usage: bool) -> tuple[list[bytes], bytes]:
        """The content chunks (one per token), and everything after them in one piece."""
        cached = self._streams.get((model, include_usage))
        if cached is None:
            cached = self._stream_events(model, include_usage)
            if len(self._streams) < 64:
                self._streams[model, include_usage] = cached
        return cached

    def _stream_events(self, model: str, include_usage: bool) -> tuple[list[bytes], bytes]:
        tokens = self.paced_tokens if model == self.paced_model else ANSWER_TOKENS
        base: dict[str, Any] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": None,
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, str | None], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _event({**base, "choices": [choice]})

        first = chunk({"role": "assistant", "content": "", "refusal": None})
        events = [first + chunk({"content": tokens[0]})] if tokens else [first]
        events += [chunk({"content": t}) for t in tokens[1:]]
        tail = chunk({}, "stop")
        if include_usage:
            usage = {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(tokens),
                "total_tokens": PROMPT_TOKENS + len(tokens),
            }
            tail += _event({**base, "choices": [], "usage": usage})
        return events, tail + _event("[DONE]") + b"0\r\n\r\n"


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a paced stream is being written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._serve()

    def _serve(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER:
                    self.transport.close()
                return
            head = self.buffer[:end].decode("latin-1")
            request_line, _, header_text = head.partition("\r\n")
            length = 0
            for line in header_text.split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, _, rest = request_line.partition(" ")
            path = rest.partition(" ")[0]
            self._answer(method, path, body)

    def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        if method == "POST" and path == "/v1/chat/completions":
            try:
                request = json.loads(body)
                model = str(request.get("model", "bench"))
            except (ValueError, AttributeError):
                self.transport.write(BAD_REQUEST)
                return
            if not request.get("stream"):
                self.transport.write(self.upstream.completion(model))
                return
            options = request.get("stream_options") or {}
            events, tail = self.upstream.stream_events(model, bool(options.get("include_usage")))
            if model != self.upstream.paced_model or self.upstream.delay_s <= 0:
                self.transport.write(STREAM_HEAD + b"".join(events) + tail)
                return
            self.busy = True
            asyncio.get_running_loop().create_task(self._paced(events, tail))
        elif method == "GET" and path == "/v1/models":
            self.transport.write(self.upstream.models())
        elif method == "GET" and path == "/health":
            self.transport.write(HEALTH)
        else:
            self.transport.write(NOT_FOUND)

    async def _paced(self, events: list[bytes], tail: bytes) -> None:
        try:
            for i, event in enumerate(events):
                if self.transport is None:
                    return
                if i:
                    await asyncio.sleep(self.upstream.delay_s)
                self.transport.write(STREAM_HEAD + event if i == 0 else event)
            if self.transport is not None:
                self.transport.write(tail)
        finally:
            self.busy = False
        if self.buffer:
            self._serve()


async def serve(host: str, port: int, upstream: Upstream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--paced-model", default="paced")
    parser.add_argument("--tokens", type=int, default=16, help="tokens in a paced stream")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="between paced tokens")
    args = parser.parse_args()
    upstream = Upstream(args.paced_model, args.tokens, args.delay_ms / 1000)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, upstream))


if __name__ == "__main__":
    main()
