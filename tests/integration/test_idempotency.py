"""``Idempotency-Key`` on the chat routes: one answer, one message, one set of ledger rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mvm_chat.errors import Conflict, InvalidInput
from mvm_chat.store.db import Database, upgrade
from mvm_chat.store.idempotency import Claim, claim, complete, release
from mvm_chat.store.keys import create_key
from tests.support import Server


@pytest.fixture
def api(sqlite_server: Server, client_key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {client_key}", "Cache-Control": "no-cache"}
    with httpx.Client(base_url=sqlite_server.url, headers=headers, timeout=60) as c:
        yield c


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _counts(server: Server, conversation_id: str) -> tuple[int, int]:
    """Messages and ledger rows of a conversation."""
    with sqlite3.connect(server.workdir / "var" / "mvm_chat.db") as db:
        messages = db.execute(
            "SELECT count(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()[0]
        ledger = db.execute(
            "SELECT count(*) FROM ledger_entries WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()[0]
    return messages, ledger


def test_a_retry_replays_the_answer_and_writes_nothing(
    api: httpx.Client, sqlite_server: Server
) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    headers = _key()
    body = {"content": "What is a debit card?", "max_tokens": 40}
    first = api.post(f"/v1/conversations/{conversation_id}/messages", json=body, headers=headers)
    assert first.status_code == 200, first.text
    written = _counts(sqlite_server, conversation_id)
    assert written == (2, 1)
    again = api.post(f"/v1/conversations/{conversation_id}/messages", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert _counts(sqlite_server, conversation_id) == written
    # the same body with its keys in another order is the same request
    reordered = api.post(
        f"/v1/conversations/{conversation_id}/messages",
        content=json.dumps(dict(reversed(list(body.items())))),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert reordered.json() == first.json()
    assert _counts(sqlite_server, conversation_id) == written


def test_another_body_with_the_same_key_is_422(api: httpx.Client) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    headers = _key()
    url = f"/v1/conversations/{conversation_id}/messages"
    assert api.post(url, json={"content": "Hi"}, headers=headers).status_code == 200
    other = api.post(url, json={"content": "Something else"}, headers=headers)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    elsewhere = api.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": "auto", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert elsewhere.status_code == 422


def test_a_retry_while_the_first_runs_is_409(api: httpx.Client, sqlite_server: Server) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    headers = _key()
    url = f"/v1/conversations/{conversation_id}/messages"
    # long enough that the retry, sent at the first frame, comes while it still runs (at the
    # model's 48 tokens it could end first on a busy machine, and the retry would replay it)
    body = {"content": "Tell me a long story about banks.", "stream": True, "max_tokens": 200}
    first_frame = threading.Event()
    frames: list[dict[str, object]] = []

    def stream_first() -> None:
        with api.stream("POST", url, json=body, headers=headers) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
                    first_frame.set()

    worker = threading.Thread(target=stream_first)
    worker.start()
    try:
        assert first_frame.wait(60)
        during = api.post(url, json=body, headers=headers)
        assert during.status_code == 409, during.text
    finally:
        worker.join(120)
    done = frames[-1]
    assert done["type"] == "done"
    # afterwards the same request replays the streamed answer, as a stream
    replay: list[dict[str, object]] = []
    with api.stream("POST", url, json=body, headers=headers) as reply:
        replay = [json.loads(x[6:]) for x in reply.iter_lines() if x.startswith("data: ")]
    assert [f["type"] for f in replay] == ["routing", "token", "done"]
    assert replay[-1]["mvm"] == done["mvm"]
    assert replay[1]["text"] == done["content"]
    assert _counts(sqlite_server, conversation_id) == (2, 1)


def test_openai_route_one_conversation_per_key(api: httpx.Client, sqlite_server: Server) -> None:
    headers = _key()
    body = {"model": "auto", "messages": [{"role": "user", "content": "Hello, who are you?"}]}
    first = api.post("/v1/chat/completions", json=body, headers=headers)
    again = api.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    assert first.headers["X-Conversation-Id"] == again.headers["X-Conversation-Id"]
    assert again.json()["choices"] == first.json()["choices"]
    assert again.json()["mvm"] == first.json()["mvm"]
    assert _counts(sqlite_server, first.headers["X-Conversation-Id"]) == (2, 1)


def test_keys_belong_to_a_tenant(api: httpx.Client, sqlite_server: Server, other_key: str) -> None:
    headers = _key()
    body = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}
    mine = api.post("/v1/chat/completions", json=body, headers=headers)
    theirs = api.post(
        "/v1/chat/completions",
        json=body,
        headers={**headers, "Authorization": f"Bearer {other_key}"},
    )
    assert mine.status_code == theirs.status_code == 200
    assert mine.headers["X-Conversation-Id"] != theirs.headers["X-Conversation-Id"]


def test_a_failed_request_releases_its_key(api: httpx.Client) -> None:
    headers = _key()
    url = f"/v1/conversations/{uuid.uuid4().hex}/messages"
    assert api.post(url, json={"content": "Hi"}, headers=headers).status_code == 404
    assert api.post(url, json={"content": "Hi"}, headers=headers).status_code == 404


@pytest.mark.parametrize("bad", ["", "x" * 256, "bad\tkey"])
def test_a_malformed_key_is_422(api: httpx.Client, bad: str) -> None:
    conversation_id = api.post("/v1/conversations", json={}).json()["id"]
    reply = api.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "Hi"},
        headers={"Idempotency-Key": bad},
    )
    assert reply.status_code == 422
    assert "Idempotency-Key" in reply.json()["detail"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    upgrade(url)
    return url


async def test_concurrent_claims_of_one_key_let_one_through(db_url: str) -> None:
    db = Database(db_url)
    try:
        async with db.transaction() as session:
            principal = await create_key(session, f"t-{uuid.uuid4().hex[:8]}", "client")
        tenant_id = principal[0].tenant_id

        async def one() -> Claim | Exception:
            try:
                return await claim(db, tenant_id, "k1", "POST /x", "h1")
            except (Conflict, InvalidInput) as exc:
                return exc

        outcomes = await asyncio.gather(*(one() for _ in range(6)))
        claims = [o for o in outcomes if isinstance(o, Claim)]
        assert len(claims) == 1 and claims[0].replay is None
        assert all(isinstance(o, Conflict) for o in outcomes if o not in claims)
        with pytest.raises(InvalidInput):
            await claim(db, tenant_id, "k1", "POST /x", "another body")
        await complete(db, claims[0].id, {"text": "done"})
        assert (await claim(db, tenant_id, "k1", "POST /x", "h1")).replay == {"text": "done"}
        fresh = await claim(db, tenant_id, "k2", "POST /x", "h1")
        await release(db, fresh.id)
        assert (await claim(db, tenant_id, "k2", "POST /x", "h1")).replay is None
    finally:
        await db.dispose()
