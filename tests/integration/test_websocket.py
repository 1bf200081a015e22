"""WebSocket frames with the `websockets` client, and the terminal client built on it."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from mvm_chat.client import ChatClient
from tests.support import Server


def _new_conversation(server: Server, key: str) -> str:
    response = httpx.post(
        f"{server.url}/v1/conversations", json={}, headers={"Authorization": f"Bearer {key}"}
    )
    return str(response.json()["id"])


def _ws_url(server: Server, conversation_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/conversations/{conversation_id}/ws"


def _until_done(ws: ClientConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=60))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def test_token_frames_then_done(sqlite_server: Server, client_key: str) -> None:
    conversation_id = _new_conversation(sqlite_server, client_key)
    with connect(
        _ws_url(sqlite_server, conversation_id),
        additional_headers={"Authorization": f"Bearer {client_key}"},
    ) as ws:
        ws.send(json.dumps({"type": "message", "content": "Hi! What can you do?"}))
        frames = _until_done(ws)
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "routing" and kinds[-1] == "done"
        assert kinds.count("token") >= 2
        done = frames[-1]
        assert done["mvm"]["model"] == "smollm2-135m"
        assert done["mvm"]["conversation_id"] == conversation_id
        assert done["content"] == "".join(f["text"] for f in frames if f["type"] == "token")
        assert {"cost_usd", "baseline_cost_usd", "savings_usd"} <= done["mvm"].keys()

        # a second message on the same socket continues the conversation
        ws.send(json.dumps({"type": "message", "content": "Thanks."}))
        assert _until_done(ws)[-1]["type"] == "done"

    detail = httpx.get(
        f"{sqlite_server.url}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {client_key}"},
    ).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
    # a WebSocket has no request line per turn: each turn gets a line of its own
    turns = [
        json.loads(line)
        for line in sqlite_server.log.read_text().splitlines()
        if line.startswith("{") and conversation_id in line
    ]
    turns = [t for t in turns if t.get("event") == "turn.complete"]
    assert len(turns) == 2
    assert all(t["model"] == "smollm2-135m" and t["completion_tokens"] > 0 for t in turns)


def test_bad_frames_get_error_frames_and_socket_stays_usable(
    sqlite_server: Server, client_key: str
) -> None:
    conversation_id = _new_conversation(sqlite_server, client_key)
    with connect(f"{_ws_url(sqlite_server, conversation_id)}?token={client_key}") as ws:
        for bad, field in [
            ("this is not json", "frame"),
            (json.dumps({"type": "dance"}), "type"),
            (json.dumps(["message"]), "frame"),
            (json.dumps({"type": "message", "content": ""}), "content"),
            (json.dumps({"type": "message", "content": "x", "max_tokens": -1}), "max_tokens"),
            (json.dumps({"type": "message", "content": "x", "model": "nope"}), "nope"),
        ]:
            ws.send(bad)
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "error", frame
            assert field in frame["detail"]
            assert frame["code"] in (404, 422)
        ws.send(json.dumps({"type": "message", "content": "Still there?"}))
        assert _until_done(ws)[-1]["type"] == "done"


def test_websocket_auth_and_tenant_scope(
    sqlite_server: Server, client_key: str, other_key: str
) -> None:
    conversation_id = _new_conversation(sqlite_server, client_key)
    for url in (
        _ws_url(sqlite_server, conversation_id),
        f"{_ws_url(sqlite_server, conversation_id)}?token=mvm_wrong",
    ):
        with connect(url) as ws:
            assert json.loads(ws.recv(timeout=10))["code"] == 401
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    with connect(f"{_ws_url(sqlite_server, conversation_id)}?token={other_key}") as ws:
        frame = json.loads(ws.recv(timeout=10))
        assert frame == {
            "type": "error",
            "code": 404,
            "detail": f"conversation {conversation_id!r} not found",
        }
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)


def test_terminal_client_streams_and_reports(sqlite_server: Server, client_key: str) -> None:
    client = ChatClient(sqlite_server.url, client_key)
    conversation_id = client.new_conversation()
    out = io.StringIO()
    with connect(
        client._ws_url(conversation_id),
        additional_headers={"Authorization": f"Bearer {client_key}"},
    ) as ws:
        done = client.ask(ws, "Say hello.", out=out)
    assert done["type"] == "done"
    assert out.getvalue() == done["content"] and out.getvalue().strip()


def test_mvm_chat_chat_command(sqlite_server: Server, client_key: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "mvm_chat", "chat", "--url", sqlite_server.url],
        input="Hello!\nAnd goodbye.\n",
        env={"MVM_CHAT_KEY": client_key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("bot> ") == 2
    assert result.stderr.count("smollm2-135m · tier local · cost $0.000000") == 2
