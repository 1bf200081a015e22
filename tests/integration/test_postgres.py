"""PostgreSQL through asyncpg: migrations, the refusal to serve un-migrated, stored turns."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import MODEL_TOML, Server, mvm, query_db


@pytest.fixture(scope="module")
def pg_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("pg-server")
    env = {"MVM_CHAT_DATABASE_URL": pg_url}
    server = Server(workdir, MODEL_TOML, env=env)
    refused = mvm(workdir, "serve", "--port", str(server.port), env=env, check=False)
    assert refused.returncode == 1
    assert "mvm-chat db upgrade" in refused.stderr
    assert "not migrated" in refused.stderr

    upgraded = mvm(workdir, "db", "upgrade", env=env)
    assert "migrated" in upgraded.stdout
    server.start()
    yield server
    server.stop()


def test_turns_are_stored_in_postgres(pg_server: Server, pg_url: str) -> None:
    key = pg_server.key("acme")
    sdk = openai.OpenAI(base_url=f"{pg_server.url}/v1", api_key=key, max_retries=0)
    first = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hello from Postgres."}]
    )
    conversation_id = first.model_extra["mvm"]["conversation_id"]
    streamed = sdk.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "And again, streaming."}],
        extra_body={"metadata": {"conversation_id": conversation_id}},
        stream=True,
    )
    chunks = list(streamed)
    assert chunks[-1].model_extra["mvm"]["conversation_id"] == conversation_id

    assert query_db(
        pg_url, "SELECT count(*) FROM conversations WHERE id = :c", c=conversation_id
    ) == [(1,)]
    rows = query_db(
        pg_url,
        "SELECT role, content, model, tier FROM messages WHERE conversation_id = :c ORDER BY seq",
        c=conversation_id,
    )
    assert [r[0] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[0][1] == "Hello from Postgres."
    assert rows[1][1] == first.choices[0].message.content
    assert rows[1][2:] == ("smollm2-135m", "local")
    ledger = query_db(
        pg_url,
        "SELECT model, tier, status, prompt_tokens, completion_tokens "
        "FROM ledger_entries WHERE conversation_id = :c",
        c=conversation_id,
    )
    assert len(ledger) == 2
    assert all(r[0:3] == ("smollm2-135m", "local", "ok") and r[3] > 0 for r in ledger)


def test_keys_are_stored_as_hashes(pg_server: Server, pg_url: str) -> None:
    key = pg_server.key("hash-check", role="agent")
    stored = query_db(
        pg_url,
        "SELECT key_hash, role FROM api_keys k JOIN tenants t "
        "ON t.id = k.tenant_id WHERE t.name = 'hash-check'",
    )
    assert len(stored) == 1
    key_hash, role = stored[0]
    assert role == "agent" and key not in str(key_hash) and len(str(key_hash)) == 64


def test_tenant_isolation_on_postgres(pg_server: Server) -> None:
    a, b = pg_server.key("tenant-a"), pg_server.key("tenant-b")
    created = httpx.post(
        f"{pg_server.url}/v1/conversations", json={}, headers={"Authorization": f"Bearer {a}"}
    )
    conversation_id = created.json()["id"]
    own = httpx.get(
        f"{pg_server.url}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {a}"},
    )
    other = httpx.get(
        f"{pg_server.url}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {b}"},
    )
    assert (own.status_code, other.status_code) == (200, 404)


def test_revoked_key_stops_working_at_once(pg_server: Server) -> None:
    key = pg_server.key("revoke-me")
    url = f"{pg_server.url}/v1/conversations"
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    mvm(pg_server.workdir, "keys", "revoke", key[:10], env=pg_server.env)
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
