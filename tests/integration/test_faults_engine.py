"""Faults against real processes: an OpenAI-compatible upstream of the test's own that hangs,
answers 500 or garbage, or breaks its stream; the ladder falls back within the timeout, and the
ledger records the failed call."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support import MODEL_TOML, Server

FAST_MODEL_TOML = MODEL_TOML.replace("max_tokens = 48", "max_tokens = 8")


class FaultyUpstream:
    """An OpenAI-compatible server on 127.0.0.1 that fails as it is told (``mode``): ``hang``
    (never answers), ``500``, ``garbage`` (200 with no JSON), ``cut`` (an answer that breaks
    off mid-way), ``stall`` (an answer that stops arriving) or ``malformed`` (bad JSON). With
    ``"stream": true`` the answer is a stream of SSE chunks, else one JSON body."""

    def __init__(self) -> None:
        self.mode = "500"
        self.hits: dict[str, int] = {}
        self.released = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, "application/json", b'{"object": "list", "data": []}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                mode = upstream.mode
                upstream.hits[mode] = upstream.hits.get(mode, 0) + 1
                with contextlib.suppress(OSError):  # the gateway gave up first
                    if body.get("stream") or mode in ("hang", "500", "garbage"):
                        self._fail(mode)
                    else:
                        self._fail_whole(mode)

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _fail(self, mode: str) -> None:
                chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "Sure"}}]}\n\n'
                if mode == "hang":
                    upstream.released.wait(300)
                    self.close_connection = True
                elif mode == "500":
                    self._send(500, "application/json", b'{"error": {"message": "boom"}}')
                elif mode == "garbage":
                    self._send(200, "text/html", b"<html>\x00\xff not json at all")
                elif mode == "malformed":
                    body = chunk + b"data: {not json\n\ndata: [DONE]\n\n"
                    self._send(200, "text/event-stream", body)
                else:  # cut, stall: a chunked stream that never ends properly
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    if mode == "stall":
                        upstream.released.wait(300)
                    self.close_connection = True  # no final chunk: the transfer breaks

            def _fail_whole(self, mode: str) -> None:
                answer = json.dumps(
                    {
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "Sure"},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                ).encode()
                if mode == "malformed":
                    self._send(200, "application/json", answer[:-1] + b", ")
                    return
                self.send_response(200)  # cut, stall: fewer bytes than the length announced
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer[: len(answer) // 2])
                self.wfile.flush()
                if mode == "stall":
                    upstream.released.wait(300)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FaultyUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


ENGINE_TIMEOUT_S = 2.0
# Generous, and not a performance figure: the failed call must end at its timeout, then the
# local tier answers on a shared machine; an upstream that hangs keeps hanging for 300 s.
WITHIN_S = ENGINE_TIMEOUT_S + 25.0
FAULTS = ["hang", "500", "garbage", "cut", "stall", "malformed"]


@pytest.fixture(scope="module")
def engine_fault(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, FaultyUpstream]]:
    upstream = FaultyUpstream().start()
    config = (
        FAST_MODEL_TOML
        + f"""
[[tiers]]
name = "api"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "http://127.0.0.1:{upstream.port}/v1"
upstream_model = "faulty"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
max_tokens = 8
timeout_s = {ENGINE_TIMEOUT_S}
connect_timeout_s = 1.0

[routing]
baseline_model = "frontier"
breaker_failures = 1000
[routing.intent_floors]
refund_request = "api"

[plugins.keyword_intents.rules]
refund_request = ["\\\\brefund"]
"""
    )
    server = Server(tmp_path_factory.mktemp("engine-fault"), config)
    try:
        server.start()
        yield server, upstream
    finally:
        server.stop()
        upstream.stop()


def _ledger(server: Server, conversation_id: str) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(server.workdir / "var" / "mvm_chat.db") as db:
        rows = db.execute(
            "SELECT model, status, escalation_reason FROM ledger_entries"
            " WHERE conversation_id = ? ORDER BY attempt",
            (conversation_id,),
        ).fetchall()
    return [(str(m), str(s), r) for m, s, r in rows]


def _ask_model(server: Server, key: str, model: str) -> tuple[httpx.Response, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "I want a refund, now."}]}
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
    started = time.monotonic()
    response = httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    )
    return response, time.monotonic() - started


@pytest.mark.parametrize("fault", FAULTS)
def test_engine_fault_falls_back_and_is_ledgered(
    engine_fault: tuple[Server, FaultyUpstream], fault: str
) -> None:
    server, upstream = engine_fault
    upstream.mode = fault
    before = upstream.hits.get(fault, 0)
    response, took = _ask_model(server, server.key("acme"), "auto")
    assert response.status_code == 200, response.text
    assert upstream.hits.get(fault, 0) > before, "the fault was served"
    assert took < WITHIN_S
    mvm = response.json()["mvm"]
    assert (mvm["model"], mvm["tier"]) == ("smollm2-135m", "local")
    last = mvm["escalations"][-1]
    assert (last["from"], last["to"]) == ("api", "local")
    assert last["reason"].startswith("error: model frontier"), last
    rows = _ledger(server, response.headers["X-Conversation-Id"])
    assert [(model, status) for model, status, _ in rows] == [
        ("frontier", "error"),
        ("smollm2-135m", "ok"),
    ], rows


@pytest.mark.parametrize("fault", FAULTS)
def test_engine_fault_on_a_named_model_is_502(
    engine_fault: tuple[Server, FaultyUpstream], fault: str
) -> None:
    server, upstream = engine_fault
    upstream.mode = fault
    response, took = _ask_model(server, server.key("acme"), "frontier")
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 502
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert took < WITHIN_S


@pytest.mark.parametrize("fault", FAULTS)
def test_engine_fault_on_a_stream(engine_fault: tuple[Server, FaultyUpstream], fault: str) -> None:
    """Streamed to the client: before any text it still falls back; once text is out, the
    stream ends with an error event and ``[DONE]`` (never a hang), and the call is ledgered."""
    server, upstream = engine_fault
    upstream.mode = fault
    body = {
        "model": "auto",
        "stream": True,
        "messages": [{"role": "user", "content": "A refund, streamed."}],
    }
    headers = {"Authorization": f"Bearer {server.key('acme')}", "Cache-Control": "no-cache"}
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        conversation_id = response.headers["X-Conversation-Id"]
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert time.monotonic() - started < WITHIN_S
    assert events[-1] == "[DONE]", events
    last = json.loads(events[-2])
    rows = [(model, status) for model, status, _ in _ledger(server, conversation_id)]
    if fault in {"hang", "500", "garbage"}:  # nothing was sent: the local tier answers
        assert last["mvm"]["tier"] == "local", last
        assert last["mvm"]["escalations"][-1]["reason"].startswith("error: model frontier")
        assert rows == [("frontier", "error"), ("smollm2-135m", "ok")], rows
    else:  # "Sure" was sent already
        assert last["error"]["code"] == 502, last
        assert "Traceback" not in events[-2]
        assert rows == [("frontier", "error")], rows
