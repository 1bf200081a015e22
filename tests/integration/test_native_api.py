"""The native conversation routes, tenant scoping and bad input, on a real server."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Server, until


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def api(sqlite_server: Server, client_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sqlite_server.url, headers=_auth(client_key), timeout=60) as c:
        yield c


def _row_counts(server: Server) -> dict[str, int]:
    with sqlite3.connect(server.workdir / "var" / "mvm_chat.db") as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("conversations", "messages", "ledger_entries")
        }


def test_conversation_lifecycle(api: httpx.Client) -> None:
    created = api.post("/v1/conversations", json={"title": "card question"})
    assert created.status_code == 201
    conversation_id = created.json()["id"]

    reply = api.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "Hello there"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["content"].strip()
    assert body["mvm"]["conversation_id"] == conversation_id
    assert body["mvm"]["message_id"] == body["id"]
    assert (body["model"], body["tier"]) == ("smollm2-135m", "local")

    detail = api.get(f"/v1/conversations/{conversation_id}").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert detail["messages"][1]["id"] == body["id"]
    assert detail["messages"][0]["created_at"] <= detail["messages"][1]["created_at"]
    assert {"cost_usd", "baseline_cost_usd", "savings_usd"} <= detail.keys()
    assert detail["created_at"].endswith("+00:00")

    listed = api.get("/v1/conversations").json()["data"]
    assert conversation_id in [c["id"] for c in listed]


def test_message_stream_is_sse_frames(api: httpx.Client) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    with api.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "Tell me a fact about cats.", "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [
            json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")
        ]
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "routing" and kinds[-1] == "done"
    assert kinds.count("token") >= 2
    text = "".join(f["text"] for f in frames if f["type"] == "token")
    assert frames[-1]["content"] == text
    assert frames[-1]["mvm"]["tier"] == "local"


def test_another_tenants_conversation_is_404(
    api: httpx.Client, sqlite_server: Server, other_key: str
) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "secret"})
    other = _auth(other_key)
    base = sqlite_server.url
    assert httpx.get(f"{base}/v1/conversations/{conversation_id}", headers=other).status_code == 404
    sent = httpx.post(
        f"{base}/v1/conversations/{conversation_id}/messages",
        json={"content": "let me in"},
        headers=other,
    )
    assert sent.status_code == 404
    assert "secret" not in sent.text
    via_openai = httpx.post(
        f"{base}/v1/chat/completions",
        json={
            "model": "auto",
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"conversation_id": conversation_id},
        },
        headers=other,
    )
    assert via_openai.status_code == 404
    listed = httpx.get(f"{base}/v1/conversations", headers=other).json()["data"]
    assert conversation_id not in [c["id"] for c in listed]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (json.dumps({"model": "auto", "messages": []}).encode(), 422, "messages"),
        (json.dumps({"model": "auto", "messages": [{"role": "user"}]}).encode(), 422, "content"),
        (
            json.dumps({"model": "auto", "messages": [{"role": "user", "content": ""}]}).encode(),
            422,
            "content",
        ),
        (
            json.dumps(
                {"model": "auto", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}
            ).encode(),
            422,
            "max_tokens",
        ),
        (
            json.dumps(
                {
                    "model": "auto",
                    "max_tokens": 10**9,
                    "messages": [{"role": "user", "content": "x"}],
                }
            ).encode(),
            422,
            "max_tokens",
        ),
        (
            json.dumps(
                {
                    "model": "auto",
                    "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}],
                }
            ).encode(),
            413,
            None,
        ),
    ],
)
def test_bad_input_is_refused_without_rows(
    api: httpx.Client, sqlite_server: Server, body: bytes, status: int, field: str | None
) -> None:
    before = _row_counts(sqlite_server)
    response = api.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert response.headers["content-type"].startswith("application/problem+json")
    if field:
        assert field in problem["detail"]
    assert "Traceback" not in response.text
    assert _row_counts(sqlite_server) == before


def test_native_message_validation(api: httpx.Client) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    empty = api.post(f"/v1/conversations/{conversation_id}/messages", json={"content": ""})
    assert empty.status_code == 422 and "content" in empty.json()["detail"]
    missing = api.post("/v1/conversations/nope/messages", json={"content": "hi"})
    assert missing.status_code == 404


def test_missing_and_wrong_keys_are_401(sqlite_server: Server) -> None:
    base = sqlite_server.url
    assert httpx.get(f"{base}/v1/conversations").status_code == 401
    wrong = httpx.get(f"{base}/v1/conversations", headers=_auth("mvm_wrong"))
    assert wrong.status_code == 401 and wrong.json()["title"] == "Unauthorized"
    assert httpx.get(f"{base}/admin/tenants").status_code == 401


def test_client_key_cannot_reach_admin(sqlite_server: Server, client_key: str) -> None:
    response = httpx.get(f"{sqlite_server.url}/admin/tenants", headers=_auth(client_key))
    assert response.status_code == 403


def test_admin_key_lists_models_with_health(sqlite_server: Server) -> None:
    admin = sqlite_server.key("acme", role="admin")
    models = httpx.get(f"{sqlite_server.url}/admin/models", headers=_auth(admin)).json()
    assert models[0]["name"] == "smollm2-135m" and models[0]["healthy"] is True
    assert models[0]["info"]["architecture"] == "llama"


def test_system_routes(sqlite_server: Server, api: httpx.Client) -> None:
    base = sqlite_server.url
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"database", "cache", "engine:smollm2-135m"}
    schema = httpx.get(f"{base}/schema").json()
    assert "/v1/chat/completions" in schema["paths"]
    api.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "metrics?"}]},
    )
    metrics = httpx.get(f"{base}/metrics").text
    route = 'route="/v1/chat/completions"'
    assert f'mvm_http_requests_total{{method="POST",{route},status="200"}}' in metrics
    assert 'mvm_turns_total{model="smollm2-135m",tier="local"}' in metrics
    assert 'mvm_tokens_total{kind="completion",model="smollm2-135m",tier="local"}' in metrics


def _request_lines(server: Server, request_id: str) -> list[dict[str, Any]]:
    """The log lines of one request, once its request line is written (after the reply)."""

    def lines() -> list[dict[str, Any]]:
        found = []
        for text in server.log.read_text().splitlines():
            if text.startswith("{") and request_id in text:
                try:
                    found.append(json.loads(text))
                except json.JSONDecodeError:  # the line being written
                    continue
        return found

    until(lambda: any(x["event"] == "request" for x in lines()), f"the line of {request_id}")
    return lines()


def test_request_id_header_and_json_logs(sqlite_server: Server, api: httpx.Client) -> None:
    response = api.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "log me"}]},
    )
    mine = _request_lines(sqlite_server, response.headers["x-request-id"])
    # one line per request: the turn's summary rides on the request's line (routing moves,
    # when there are any, have lines of their own)
    assert "turn.complete" not in [entry["event"] for entry in mine]
    [line] = [entry for entry in mine if entry["event"] == "request"]
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["status"] == 200 and line["latency_ms"] > 0
    assert line["model"] == "smollm2-135m" and line["tier"] == "local"
    assert line["tenant"] == "acme"
    assert line["conversation_id"] == response.json()["mvm"]["conversation_id"]
    assert line["completion_tokens"] == response.json()["usage"]["completion_tokens"]
    assert line["cache"] in ("miss", "hit") and line["attempts"] == 1
    assert 0 <= line["call_latency_ms"] <= line["latency_ms"] + 1  # whole ms against 0.01

    # a streamed reply's line is written when the stream ends, with the turn on it too
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "log me"}]}
    with api.stream("POST", "/v1/chat/completions", json=body) as streamed:
        request_id = streamed.headers["x-request-id"]
        assert "[DONE]" in "".join(streamed.iter_text())
    logged = _request_lines(sqlite_server, request_id)
    [line] = [x for x in logged if x["event"] == "request"]
    assert (line["status"], line["model"]) == (200, "smollm2-135m")
    assert line["completion_tokens"] > 0


def test_every_response_has_a_request_id(sqlite_server: Server, api: httpx.Client) -> None:
    refused = httpx.get(f"{sqlite_server.url}/v1/conversations", headers=_auth("mvm_wrong"))
    assert refused.status_code == 401
    [line] = [
        x
        for x in _request_lines(sqlite_server, refused.headers["x-request-id"])
        if x["event"] == "request"
    ]
    assert line["status"] == 401
    for response in (api.get("/v1/nothing-here"), api.delete("/v1/models")):
        assert response.status_code in (404, 405)
        assert len(response.headers["x-request-id"]) == 32
        assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
    ok = api.get("/v1/models")
    assert len(ok.headers.get_list("x-request-id")) == 1


def test_cache_hit_and_bypass(api: httpx.Client) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "Cache me please."}]}
    first = api.post("/v1/chat/completions", json=body).json()
    second = api.post("/v1/chat/completions", json=body).json()
    assert second["mvm"]["cache"] == "hit"
    assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    bypass = api.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
    assert bypass.json()["mvm"]["cache"] == "bypass"


def test_client_disconnect_mid_stream_keeps_and_bills_the_partial_answer(
    api: httpx.Client, sqlite_server: Server
) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    with api.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={
            "content": "Write a very long poem about the sea.",
            "stream": True,
            "max_tokens": 400,
        },
        headers={"Cache-Control": "no-cache"},
    ) as response:
        for line in response.iter_lines():
            if '"type": "token"' in line:
                break  # leave after the first token
    deadline = time.monotonic() + 30
    messages: list[dict[str, str]] = []
    while time.monotonic() < deadline and len(messages) < 2:
        messages = api.get(f"/v1/conversations/{conversation_id}").json()["messages"]
        time.sleep(0.2)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    with sqlite3.connect(sqlite_server.workdir / "var" / "mvm_chat.db") as db:
        rows = db.execute(
            "SELECT status, completion_tokens FROM ledger_entries WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchall()
    assert len(rows) == 1
    status, completion_tokens = rows[0]
    assert status == "client_disconnected"
    assert 0 < completion_tokens < 400


def test_cache_is_per_tenant(sqlite_server: Server, client_key: str, other_key: str) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "Tenant-private cache?"}]}
    url = f"{sqlite_server.url}/v1/chat/completions"
    first = httpx.post(url, json=body, headers=_auth(client_key), timeout=60).json()
    other = httpx.post(url, json=body, headers=_auth(other_key), timeout=60).json()
    again = httpx.post(url, json=body, headers=_auth(client_key), timeout=60).json()
    assert (first["mvm"]["cache"], other["mvm"]["cache"], again["mvm"]["cache"]) == (
        "miss",
        "miss",
        "hit",
    )


def test_keys_never_reach_the_logs(sqlite_server: Server, client_key: str) -> None:
    from websockets.sync.client import connect

    conversation_id = httpx.post(
        f"{sqlite_server.url}/v1/conversations", json={}, headers=_auth(client_key)
    ).json()["id"]
    url = f"ws://127.0.0.1:{sqlite_server.port}/v1/conversations/{conversation_id}/ws"
    with connect(f"{url}?token={client_key}") as ws:
        ws.send(json.dumps({"type": "message", "content": "hi"}))
        while json.loads(ws.recv(timeout=60))["type"] not in ("done", "error"):
            pass
    until(
        lambda: "token=[redacted]" in sqlite_server.log.read_text(),
        "the WebSocket request was never logged",
    )
    assert client_key not in sqlite_server.log.read_text()


def test_a_request_cannot_name_an_upstream(api: httpx.Client, sqlite_server: Server) -> None:
    trap = f"http://127.0.0.1:{sqlite_server.port + 1}/v1"
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello upstream"}],
        "api_base": trap,
        "base_url": trap,
        "api_key": "sk-x",
        "custom_llm_provider": "x",
    }
    response = api.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["mvm"]["model"] == "smollm2-135m"
    assert trap not in sqlite_server.log.read_text()
