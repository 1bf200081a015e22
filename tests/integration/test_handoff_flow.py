"""A user asks for a person over the WebSocket: the pipeline hands the conversation off, the
user's next messages go to the agent, the agent's reply arrives as an ``agent_message`` frame,
and after ``resolve`` the model answers again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support import MODEL_TOML, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("handoff-flow"), MODEL_TOML).start()
    yield running
    running.stop()


def _frames_until_done(ws: ClientConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=60))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def _next_of_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(ws.recv(timeout=30))
        if frame["type"] == kind:
            return dict(frame)


def test_handoff_round_trip(server: Server) -> None:
    user = server.key("acme")
    agent = {"Authorization": f"Bearer {server.key('acme', role='agent')}"}
    base = server.url
    conversation_id = httpx.post(
        f"{base}/v1/conversations", json={}, headers={"Authorization": f"Bearer {user}"}
    ).json()["id"]
    url = f"ws://127.0.0.1:{server.port}/v1/conversations/{conversation_id}/ws?token={user}"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "message", "content": "I want to talk to a human."}))
        frames = _frames_until_done(ws)
        done = frames[-1]
        assert frames[0]["type"] == "routing" and frames[0]["model"] == "human"
        assert done["mvm"]["model"] == done["mvm"]["tier"] == "human"
        assert done["content"].startswith("I have passed this to a person")
        handoff_id = done["mvm"]["handoff_id"]
        assert handoff_id
        assert done["mvm"]["escalations"][-1] == {
            "from": "local",
            "to": "human",
            "reason": "user asked for a person",
        }

        ws.send(json.dumps({"type": "message", "content": "My card was charged twice."}))
        relayed = next(f for f in _frames_until_done(ws) if f["type"] == "done")
        assert relayed["content"] == "" and relayed["mvm"]["handoff_id"] == handoff_id

        listed = httpx.get(f"{base}/admin/handoffs?status=open", headers=agent).json()
        assert handoff_id in json.dumps(listed)
        reply = httpx.post(
            f"{base}/admin/handoffs/{handoff_id}/reply",
            json={"content": "Sorry about that, I have refunded one charge."},
            headers=agent,
        )
        assert reply.status_code in (200, 201), reply.text
        pushed = _next_of_type(ws, "agent_message")
        assert pushed["content"] == "Sorry about that, I have refunded one charge."

        detail = httpx.get(
            f"{base}/v1/conversations/{conversation_id}",
            headers={"Authorization": f"Bearer {user}"},
        ).json()
        assert [(m["role"], m["model"]) for m in detail["messages"]] == [
            ("user", None),
            ("assistant", "human"),
            ("user", None),
            ("assistant", "human"),
        ]
        assert detail["messages"][3]["content"] == pushed["content"]

        resolved = httpx.post(f"{base}/admin/handoffs/{handoff_id}/resolve", headers=agent)
        assert resolved.status_code in (200, 201), resolved.text
        ws.send(json.dumps({"type": "message", "content": "Thanks, one more question."}))
        after = next(f for f in _frames_until_done(ws) if f["type"] == "done")
        assert after["mvm"]["model"] == "smollm2-135m" and after["content"]


def test_openai_route_hands_off_too(server: Server) -> None:
    key = server.key("acme")
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "Get me a human"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ).json()
    assert response["mvm"]["model"] == "human" and response["mvm"]["handoff_id"]
    assert response["choices"][0]["message"]["content"].startswith("I have passed this")
