"""The soak test's load: asyncio clients of mixed traffic against one mvm_chat, in a process of
its own so that its CPU and memory are not the server's (``bench/soak.py`` starts it).

    python bench/soak_clients.py --url URL --key KEY --out FILE [--clients 50 --warmup 60
                                 --duration 600 --seed 8]

Each client repeats, until its phase ends, one scenario picked at random:

- ``chat``: ``POST /v1/chat/completions`` (a new conversation), JSON reply;
- ``chat_sse``: the same with ``stream: true`` (half of them on the paced model);
- ``native``: ``POST /v1/conversations``, then three turns on
  ``POST /v1/conversations/{id}/messages``, JSON or ``stream: true`` (``native_sse``) at random;
- ``ws``: a conversation, then three turns over ``WS /v1/conversations/{id}/ws``.

Half the first turns are a prompt of a small pool, so that they repeat and can hit the exact
cache; the other first turns and every follow-up carry a random reference, so that they miss it.
A third of the HTTP turns send ``Cache-Control: no-cache``. Protocol with the parent: JSON
lines on stdout (``start``, ``paused`` after the warm-up once every client has closed its
connections, ``soak``, ``done``); after ``paused`` it waits for a line on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

PROMPTS = [
    "How do I activate my new card?",
    "What is the daily limit on cash withdrawals?",
    "Can I change the PIN of my debit card?",
    "How long does a transfer to another bank take?",
    "Why was my card payment declined?",
    "How do I order a replacement card?",
    "Which currencies can I hold in my account?",
    "Is there a fee for paying abroad?",
    "How do I set up a standing order?",
    "Where can I see my last statement?",
    "How do I freeze my card for a while?",
    "Can I get a refund for a duplicate charge?",
]
FOLLOW_UPS = ["Thanks, and after that?", "Can you say that more briefly?", "What else is needed?"]
TURNS = 3
Reply = tuple[dict[str, Any] | None, float | None]
"""A completed reply's ``mvm`` object (or the created conversation), and when its first
content arrived (``time.perf_counter``; None when not streamed)."""
SCENARIOS = [("chat", 30), ("chat_sse", 15), ("native", 30), ("ws", 25)]


class Failure(Exception):
    """A request that did not complete: ``cause`` is 5xx, 4xx, transport, error_frame, ..."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


@dataclass
class Recorder:
    """Outcomes per phase and kind: latencies, first-token times, failures, cache states."""

    phase: str = "warmup"
    latency_ms: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    ttft_ms: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    failures: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    cache: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    examples: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)

    async def timed(self, kind: str, call: Awaitable[Reply]) -> dict[str, Any] | None:
        """Await ``call``, recording its outcome under ``kind``; its object, or None."""
        started = time.perf_counter()
        try:
            mvm, ttft_s = await call
        except Failure as exc:
            self.fail(kind, exc.cause, str(exc))
            return None
        except (httpx.HTTPError, WebSocketException, OSError, TimeoutError) as exc:
            self.fail(kind, "transport", f"{type(exc).__name__}: {exc}")
            return None
        self.latency_ms[self.phase][kind].append((time.perf_counter() - started) * 1000)
        if ttft_s is not None:
            self.ttft_ms[self.phase][kind].append((ttft_s - started) * 1000)
        mvm = mvm or {}
        if "cache" in mvm:
            self.cache[kind][str(mvm["cache"])] += 1
        if mvm.get("message_id"):
            self.message_ids.append(str(mvm["message_id"]))
        return mvm

    def fail(self, kind: str, cause: str, detail: str) -> None:
        self.failures[kind][cause] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{self.phase} {kind} {cause}: {detail[:300]}")


def _status(response: httpx.Response) -> None:
    if response.status_code >= 300:
        cause = "5xx" if response.status_code >= 500 else f"{response.status_code // 100}xx"
        raise Failure(cause, f"HTTP {response.status_code}: {response.text[:300]}")


async def _sse(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Reply:
    """A streamed reply: its ``mvm`` object and the time of its first content."""
    first: float | None = None
    mvm: dict[str, Any] | None = None
    async with http.stream("POST", path, json=body, headers=headers) as response:
        if response.status_code >= 300:
            await response.aread()
            _status(response)
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event or event.get("type") == "error":
                raise Failure("error_frame", data)
            text = event.get("text") or next(
                (c["delta"].get("content") for c in event.get("choices") or [] if c["delta"]), ""
            )
            if text and first is None:
                first = time.perf_counter()
            mvm = event.get("mvm") or mvm
    if mvm is None:
        raise Failure("incomplete", f"{path}: the stream ended without its final event")
    return mvm, first


async def _json(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Reply:
    response = await http.post(path, json=body, headers=headers)
    _status(response)
    return response.json().get("mvm"), None


class Client:
    """One simulated user: its own connections and random stream."""

    def __init__(self, args: argparse.Namespace, index: int, rec: Recorder) -> None:
        self.args, self.rec = args, rec
        self.rng = random.Random(args.seed * 1000 + index)
        self.ws_url = args.url.replace("http://", "ws://", 1)
        self.auth = {"Authorization": f"Bearer {args.key}"}

    def _headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache"} if self.rng.random() < 1 / 3 else {}

    async def run(self, until: float) -> None:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with httpx.AsyncClient(
            base_url=self.args.url, headers=self.auth, timeout=60, limits=limits, trust_env=False
        ) as http:
            while time.time() < until:
                kind = self.rng.choices([s for s, _ in SCENARIOS], [w for _, w in SCENARIOS])[0]
                if kind in ("chat", "chat_sse"):
                    await self._chat(http, kind == "chat_sse")
                else:
                    created = await self.rec.timed("create", self._create(http))
                    if created is not None:
                        await (self._ws if kind == "ws" else self._native)(
                            http, created["id"], until
                        )

    async def _chat(self, http: httpx.AsyncClient, stream: bool) -> None:
        paced = stream and self.rng.random() < 0.5
        body: dict[str, Any] = {
            "model": "bench-paced" if paced else "auto",
            "messages": [{"role": "user", "content": self._first()}],
            "max_tokens": 32,
        }
        send = _sse if stream else _json
        body["stream"] = stream
        await self.rec.timed(
            "chat_sse" if stream else "chat",
            send(http, "/v1/chat/completions", body, self._headers()),
        )

    async def _create(self, http: httpx.AsyncClient) -> Reply:
        response = await http.post("/v1/conversations", json={"title": "soak"})
        _status(response)
        return {"id": response.json()["id"]}, None

    def _unique(self, text: str) -> str:
        return f"{text} (ref {self.rng.randrange(10**9)})"

    def _first(self) -> str:
        prompt = self.rng.choice(PROMPTS)
        return prompt if self.rng.random() < 0.5 else self._unique(prompt)

    def _texts(self) -> list[str]:
        return [self._first(), *map(self._unique, self.rng.sample(FOLLOW_UPS, TURNS - 1))]

    async def _native(self, http: httpx.AsyncClient, conversation: str, until: float) -> None:
        for text in self._texts():
            if time.time() >= until:
                return
            stream = self.rng.random() < 0.5
            body = {"content": text, "max_tokens": 32, "stream": stream}
            path = f"/v1/conversations/{conversation}/messages"
            send = _sse if stream else _json
            mvm = await self.rec.timed(
                "native_sse" if stream else "native", send(http, path, body, self._headers())
            )
            if mvm is None:
                return

    async def _ws(self, _: httpx.AsyncClient, conversation: str, until: float) -> None:
        url = f"{self.ws_url}/v1/conversations/{conversation}/ws"
        try:
            async with connect(url, additional_headers=self.auth, proxy=None) as socket:
                for text in self._texts():
                    if time.time() >= until:
                        return
                    frame = {"type": "message", "content": text, "max_tokens": 32}
                    if await self.rec.timed("ws", _ws_turn(socket, frame)) is None:
                        return
        except (WebSocketException, OSError, TimeoutError) as exc:
            self.rec.fail("ws", "transport", f"connect/close: {type(exc).__name__}: {exc}")


async def _ws_turn(socket: ClientConnection, frame: dict[str, Any]) -> Reply:
    """One WebSocket turn: frames until ``done``."""
    await socket.send(json.dumps(frame))
    first: float | None = None
    while True:
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=60))
        if event.get("type") == "error":
            raise Failure("5xx" if event.get("code", 0) >= 500 else "error_frame", str(event))
        if event.get("type") == "token" and first is None:
            first = time.perf_counter()
        if event.get("type") == "done":
            return event.get("mvm"), first


def _emit(event: str, **extra: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **extra}), flush=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder()
    started = time.time()
    _emit("start")
    clients = [Client(args, i, rec) for i in range(args.clients)]
    await asyncio.gather(*(c.run(started + args.warmup) for c in clients))
    _emit("paused")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    rec.phase = "soak"
    soak_started = time.time()
    _emit("soak")
    await asyncio.gather(*(c.run(soak_started + args.duration) for c in clients))
    return {
        "started": started,
        "soak_started": soak_started,
        "ended": time.time(),
        "latency_ms": rec.latency_ms,
        "ttft_ms": rec.ttft_ms,
        "failures": rec.failures,
        "cache": rec.cache,
        "examples": rec.examples,
        "message_ids": rec.message_ids,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=8)
    options = parser.parse_args()
    results = uvloop.run(main(options))
    with open(options.out, "w") as out:
        json.dump(results, out)
    _emit("done")
