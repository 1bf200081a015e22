"""Secrets never leave: canaries in a model's ``api_key_env`` and a plugin's ``{env = ...}``
setting never appear in the server's log, any response (bodies and headers, errors included),
the database (ledger, messages, handoffs: every table), ``/metrics`` or the admin routes.

The canaries are really used: the paid model's key goes to a real upstream (llama-cpp-python's
OpenAI-compatible server), a second upstream answers 401 echoing the key it was sent (as
OpenAI's "Incorrect API key provided: ..." does), and the plugin raises an error carrying its
token. Each would leak if the server passed upstream or plugin text through as it came.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import standin_model
from tests.support import LlamaCppServer, Server

API_CANARY = f"sk-canary-{uuid.uuid4().hex}"
ECHO_CANARY = f"sk-echo-canary-{uuid.uuid4().hex}"
PLUGIN_CANARY = f"plugin-canary-{uuid.uuid4().hex}"
CANARIES = (API_CANARY, ECHO_CANARY, PLUGIN_CANARY)

PLUGIN = '''
"""Reads a token from the environment; logs its config; fails loudly with the token."""

import structlog

from mvm_chat import IntentPrediction, hookimpl

log = structlog.get_logger("canary_plugin")


class Canary:
    name = "canary"

    def __init__(self, config):
        self.token = config["token"]
        log.info("canary.configured", config=config)

    def classify(self, turn):
        if "boom" in turn.text:
            raise RuntimeError(f"the intent service refused token {self.token}")
        return IntentPrediction("smalltalk", 0.2)


@hookimpl
def register_intent_classifiers(register):
    register(Canary(register.config))
'''


class EchoUpstream(BaseHTTPRequestHandler):
    """An OpenAI-style upstream that refuses every key, quoting it (as OpenAI's 401 does)."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self._reply(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        EchoUpstream.seen.append(key)
        message = f"Incorrect API key provided: {key}. You can find your API key at ..."
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
        self._reply(401, {"error": error})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        return


@dataclass
class Site:
    server: Server
    upstream: LlamaCppServer
    client: str
    admin: str
    seen: list[str] = field(default_factory=list)
    """Every response (status line, headers, body) the tests received."""

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.client}", "Cache-Control": "no-cache"}
        response = httpx.request(method, self.server.url + path, headers=headers, timeout=120, **kw)
        self.seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response


def _config(standin: str, upstream: str, echo: str) -> str:
    return f"""
[[tiers]]
name = "local"
[[tiers]]
name = "api"

{standin_model(standin, "small", "local")}
[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "{upstream}"
upstream_model = "smol"
api_key_env = "FRONTIER_KEY"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
max_tokens = 6
connect_timeout_s = 1

[[models]]
name = "echoer"
tier = "api"
engine = "openai"
base_url = "{echo}"
api_key_env = "ECHO_KEY"
price_input_per_mtok = "1"
price_output_per_mtok = "1"
connect_timeout_s = 1

[routing]
baseline_model = "frontier"

[plugins.canary_plugin]
token = {{ env = "CANARY_PLUGIN_TOKEN" }}
"""


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def site(standin: str, echo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root: Path = tmp_path_factory.mktemp("secrets")
    (root / "plugins").mkdir()
    (root / "plugins" / "canary_plugin.py").write_text(PLUGIN)
    upstream = LlamaCppServer(root / "llama.log").start()
    env = {
        "FRONTIER_KEY": API_CANARY,
        "ECHO_KEY": ECHO_CANARY,
        "CANARY_PLUGIN_TOKEN": PLUGIN_CANARY,
        "MVM_CHAT_PLUGINS_DIR": str(root / "plugins"),
    }
    server = Server(root / "app", _config(standin, upstream.api_base, echo), env=env)
    try:
        server.start()
        yield Site(server, upstream, server.key("acme"), server.key("ops", "admin"))
    finally:
        server.stop()
        upstream.stop()


def _chat(model: str, text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


def test_canaries_never_leave_the_server(site: Site) -> None:
    # answers: the local tier, the paid upstream (streamed and not), a WebSocket turn
    assert site.call("POST", "/v1/chat/completions", json=_chat("auto", "Hi")).status_code == 200
    paid = site.call("POST", "/v1/chat/completions", json=_chat("frontier", "Say hi"))
    assert paid.status_code == 200, paid.text
    assert paid.json()["mvm"]["model"] == "frontier"
    streamed = site.call("POST", "/v1/chat/completions", json=_chat("frontier", "Hi", True))
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    conversation = site.call("POST", "/v1/conversations", json={}).json()["id"]
    ws_url = site.server.url.replace("http", "ws") + f"/v1/conversations/{conversation}/ws"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {site.client}"}) as ws:
        ws.send(json.dumps({"type": "message", "content": "hello", "model": "echoer"}))
        frames = [ws.recv(timeout=60) for _ in range(2)]
    site.seen += [str(f) for f in frames]
    assert '"code": 502' in frames[-1] or '"code":502' in frames[-1]

    # errors: an upstream that quotes the key back, a plugin that raises with its token
    echoed = site.call("POST", "/v1/chat/completions", json=_chat("echoer", "Hi"))
    assert echoed.status_code == 502
    assert "[redacted]" in echoed.json()["detail"]
    assert EchoUpstream.seen and set(EchoUpstream.seen) == {ECHO_CANARY}  # it was sent
    echoed_stream = site.call("POST", "/v1/chat/completions", json=_chat("echoer", "Hi", True))
    assert echoed_stream.status_code in (200, 502)
    boom = site.call("POST", "/v1/chat/completions", json=_chat("auto", "boom"))
    assert boom.status_code == 200  # a broken plugin never breaks a conversation
    # the paid upstream goes away: errors name it, never its key
    site.upstream.stop()
    gone = site.call("POST", "/v1/chat/completions", json=_chat("frontier", "Hi"))
    assert gone.status_code == 502
    site.call("POST", "/v1/chat/completions", json=_chat("frontier", "Hi", True))

    # every admin and system route
    for path in (
        "/admin/models",
        "/admin/plugins",
        "/admin/tenants",
        "/admin/costs/summary",
        "/admin/costs/summary?group_by=model",
        "/admin/costs/ledger",
        "/admin/costs/ledger.csv",
        "/admin/rightsizing",
        "/admin/budgets",
        "/admin/handoffs",
    ):
        assert site.call("GET", path, key=site.admin).status_code == 200, path
    for path in ("/metrics", "/readyz", "/healthz", "/schema/openapi.json", "/v1/models"):
        site.call("GET", path)
    metrics = site.call("GET", "/metrics").text
    assert 'mvm_plugin_errors_total{plugin="canary_plugin"}' in metrics  # the plugin raised

    log = site.server.log.read_text()
    assert "the intent service refused token [redacted]" in log
    assert "Incorrect API key provided: [redacted]" in log  # the upstream's echo, scrubbed
    with sqlite3.connect(site.server.workdir / "var" / "mvm_chat.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        stored = [str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]
    assert any("frontier" in row for row in stored)  # the ledger has the paid calls

    for canary in CANARIES:
        assert canary not in log
        assert not [s for s in site.seen if canary in s]
        assert not [row for row in stored if canary in row]
    # the callers' own keys, sent with every request: never logged, only their hash stored
    for key in (site.client, site.admin):
        assert key not in log
        assert not [row for row in stored if key in row]
