"""Human handoff against real servers: the agents' API, its access rules, and the agent's reply
reaching the user's WebSocket, in-process, through Redis, and across two server processes that
share one Postgres and one Redis.

Handoffs are opened with :func:`mvm_chat.chat.handoff.open_handoff` on the server's own
database, as the pipeline does when a user asks for a person.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from websockets.sync.client import ClientConnection, connect

from mvm_chat.cache import create_cache
from mvm_chat.cache.pubsub import create_pubsub
from mvm_chat.chat.handoff import open_handoff, relay_user_message
from mvm_chat.chat.services import Services
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import Settings
from mvm_chat.store.db import Database
from mvm_chat.store.models import Conversation
from tests.conftest import _pg_exec
from tests.support import MODEL_TOML, REDIS_UP_TIMEOUT_S, Server, mvm, redis_toml

Redis = tuple[str, str]
"""A Redis URL and key prefix."""


def _redis_config(redis: Redis) -> str:
    return MODEL_TOML + redis_toml(*redis)


def _sqlite_url(server: Server) -> str:
    return f"sqlite+aiosqlite:///{server.workdir / 'var' / 'mvm_chat.db'}"


def _open(db_url: str, conversation_id: str, redis: Redis | None = None) -> str:
    """Hand the conversation off (with one relayed user message); returns the handoff id."""

    async def run() -> str:
        pubsub = create_pubsub(*redis, REDIS_UP_TIMEOUT_S) if redis else create_pubsub("")
        services = Services(
            settings=Settings(),
            db=Database(db_url),
            cache=create_cache(""),
            engines={},
            plugins=load_plugins(only=[]),
            pubsub=pubsub,
        )
        try:
            async with services.db.session() as session:
                conversation = await session.get(Conversation, conversation_id)
                assert conversation is not None
            tenant_id = conversation.tenant_id
            handoff = await open_handoff(services, tenant_id, conversation_id, "asked for a person")
            await relay_user_message(services, tenant_id, conversation_id, "A person, please.")
            return handoff.id
        finally:
            await services.close()

    return asyncio.run(run())


def _call(server: Server, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kwargs)


def _new_conversation(server: Server, key: str) -> str:
    response = _call(server, key, "POST", "/v1/conversations", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@contextmanager
def _socket(server: Server, conversation_id: str, key: str) -> Iterator[ClientConnection]:
    """A user's WebSocket on the conversation, once the server is listening for its events."""
    url = f"ws://127.0.0.1:{server.port}/v1/conversations/{conversation_id}/ws?token={key}"
    with connect(url) as ws:
        # The server reads client frames only after subscribing: an answered frame proves it.
        ws.send(json.dumps({"type": "sync"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "error"
        yield ws


def _frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=15))
    return frame


@pytest.fixture(scope="module")
def redis_server(
    redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    config = _redis_config((redis_url, redis_prefix))
    server = Server(tmp_path_factory.mktemp("handoff-redis"), config).start()
    yield server
    server.stop()


@pytest.fixture(params=["in-process", "redis"])
def server(request: pytest.FixtureRequest) -> Server:
    """The same server, with in-process notifications and with Redis pub/sub."""
    name = "sqlite_server" if request.param == "in-process" else "redis_server"
    found: Server = request.getfixturevalue(name)
    return found


def test_an_agent_takes_over_and_the_reply_reaches_the_socket(server: Server) -> None:
    tenant = f"handoff-{uuid.uuid4().hex[:8]}"
    client, agent = server.key(tenant), server.key(tenant, role="agent")
    conversation_id = _new_conversation(server, client)
    handoff_id = _open(_sqlite_url(server), conversation_id)

    listed = _call(server, agent, "GET", "/admin/handoffs", params={"status": "open"})
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["data"]
    assert (item["id"], item["conversation_id"], item["status"]) == (
        handoff_id,
        conversation_id,
        "open",
    )
    assert item["reason"] == "asked for a person" and item["created_at"]
    assert [(m["role"], m["content"]) for m in item["messages"]] == [("user", "A person, please.")]
    assert _call(server, agent, "GET", "/admin/handoffs?status=claimed").json()["data"] == []

    with _socket(server, conversation_id, client) as ws:
        reply = _call(
            server,
            agent,
            "POST",
            f"/admin/handoffs/{handoff_id}/reply",
            json={"content": "Hi, Sam from support here."},
        )
        assert reply.status_code == 201, reply.text
        message_id = reply.json()["message_id"]
        assert reply.json()["status"] == "claimed"
        assert _frame(ws) == {
            "type": "handoff",
            "handoff_id": handoff_id,
            "conversation_id": conversation_id,
            "status": "claimed",
        }
        pushed = _frame(ws)
        assert pushed["type"] == "agent_message"
        assert (pushed["handoff_id"], pushed["message_id"]) == (handoff_id, message_id)
        assert pushed["content"] == "Hi, Sam from support here." and pushed["created_at"]

        detail = _call(server, client, "GET", f"/v1/conversations/{conversation_id}").json()
        assert detail["status"] == "handoff"
        last = detail["messages"][-1]
        assert (last["id"], last["role"], last["content"]) == (
            message_id,
            "assistant",
            "Hi, Sam from support here.",
        )
        assert (last["model"], last["tier"]) == ("human", "human")

        resolved = _call(server, agent, "POST", f"/admin/handoffs/{handoff_id}/resolve")
        assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
        assert resolved.json()["resolved_at"]
        assert _frame(ws)["status"] == "resolved"

    detail = _call(server, client, "GET", f"/v1/conversations/{conversation_id}").json()
    assert detail["status"] == "open"


def test_who_may_act_on_a_handoff(sqlite_server: Server) -> None:
    server = sqlite_server
    tenant = f"handoff-{uuid.uuid4().hex[:8]}"
    client, agent, admin = (server.key(tenant, role=r) for r in ("client", "agent", "admin"))
    other_agent = server.key(f"{tenant}-other", role="agent")
    colleague = server.key(tenant, role="agent")
    conversation_id = _new_conversation(server, client)
    handoff_id = _open(_sqlite_url(server), conversation_id)
    base = f"/admin/handoffs/{handoff_id}"
    actions = [
        ("GET", "/admin/handoffs", {}),
        ("GET", base, {}),
        ("POST", f"{base}/claim", {}),
        ("POST", f"{base}/reply", {"json": {"content": "hello"}}),
        ("POST", f"{base}/resolve", {}),
    ]
    for method, path, kwargs in actions:
        assert _call(server, client, method, path, **kwargs).status_code == 403, path
        assert httpx.request(method, f"{server.url}{path}", **kwargs).status_code == 401, path
    for method, path, kwargs in actions[1:]:
        refused = _call(server, other_agent, method, path, **kwargs)
        assert refused.status_code == 404, path
        assert refused.json()["detail"] == f"handoff {handoff_id!r} not found"
    assert _call(server, other_agent, "GET", "/admin/handoffs").json()["data"] == []
    assert _call(server, agent, "GET", "/admin/handoffs/nope").status_code == 404
    [listed] = _call(server, admin, "GET", "/admin/handoffs").json()["data"]
    assert listed["id"] == handoff_id

    for bad in ({"content": ""}, {"content": "   "}, {}, {"content": 5}):
        invalid = _call(server, agent, "POST", f"{base}/reply", json=bad)
        assert invalid.status_code == 422, bad
        assert "content" in invalid.json()["detail"]
    bogus = _call(server, agent, "GET", "/admin/handoffs?status=bogus")
    assert bogus.status_code == 422 and "status" in bogus.json()["detail"]

    assert _call(server, agent, "POST", f"{base}/claim").json()["claimed_by"]
    assert _call(server, agent, "POST", f"{base}/claim").status_code == 200
    taken = _call(server, colleague, "POST", f"{base}/claim")
    assert taken.status_code == 409 and taken.json()["title"] == "Conflict"
    assert _call(server, admin, "POST", f"{base}/resolve").status_code == 200
    for method, path, kwargs in actions[2:]:
        conflict = _call(server, agent, method, path, **kwargs)
        assert conflict.status_code == 409, path
        assert conflict.headers["content-type"].startswith("application/problem+json")
        assert "resolved" in conflict.json()["detail"]


@pytest.fixture(scope="module")
def two_processes(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server, str]]:
    """Two servers on one Postgres database (a fresh one, migrated) and one Redis."""
    name = f"{make_url(pg_url).database}_handoffs"
    asyncio.run(_pg_exec(pg_url, f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    env = {"MVM_CHAT_DATABASE_URL": url}
    config = _redis_config((redis_url, redis_prefix))
    first = Server(tmp_path_factory.mktemp("handoff-a"), config, env=env)
    mvm(first.workdir, "db", "upgrade", env=env)
    second = Server(tmp_path_factory.mktemp("handoff-b"), config, env=env)
    try:
        first.start()
        second.start()
        yield first, second, url
    finally:
        first.stop()
        second.stop()
        asyncio.run(_pg_exec(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
@pytest.mark.redis
def test_a_reply_posted_on_one_process_reaches_a_socket_on_another(
    two_processes: tuple[Server, Server, str], redis_url: str, redis_prefix: str
) -> None:
    a, b, db_url = two_processes
    client, agent = a.key("handoff-pg"), a.key("handoff-pg", role="agent")
    conversation_id = _new_conversation(a, client)
    with _socket(a, conversation_id, client) as ws:
        handoff_id = _open(db_url, conversation_id, redis=(redis_url, redis_prefix))
        opened = _frame(ws)  # published by this test's process, through Redis
        assert (opened["type"], opened["status"], opened["handoff_id"]) == (
            "handoff",
            "open",
            handoff_id,
        )
        reply = _call(
            b, agent, "POST", f"/admin/handoffs/{handoff_id}/reply", json={"content": "From B."}
        )
        assert reply.status_code == 201, reply.text
        assert _frame(ws)["status"] == "claimed"
        pushed = _frame(ws)
        assert (pushed["type"], pushed["content"]) == ("agent_message", "From B.")
        assert pushed["message_id"] == reply.json()["message_id"]

    detail = _call(a, client, "GET", f"/v1/conversations/{conversation_id}").json()
    assert detail["messages"][-1]["content"] == "From B."
    assert detail["messages"][-1]["model"] == "human"
