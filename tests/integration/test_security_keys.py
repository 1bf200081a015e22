"""``mvm-chat keys revoke`` holds from the very next request, on every server process that
shares the database, though each has the key in its cache (emptied by Postgres's notification
of the change); the embedded default's first-start keys are written out once, on the first
start only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import standin_model
from tests.support import Server, mvm


def _config(standin: str) -> str:
    return f"""
[[tiers]]
name = "local"

{standin_model(standin, "small", "local")}"""


@pytest.fixture(scope="module")
def servers(
    standin: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    env = {"MVM_CHAT_DATABASE_URL": pg_url}
    root: Path = tmp_path_factory.mktemp("revoke")
    first = Server(root / "one", _config(standin), env=env)
    mvm(first.workdir, "db", "upgrade", env=env)
    second = Server(root / "two", _config(standin), env=env)
    started: list[Server] = []
    try:
        for server in (first, second):
            started.append(server.start())
        yield started
    finally:
        for server in started:
            server.stop()


def _status(server: Server, key: str) -> int:
    response = httpx.get(
        f"{server.url}/v1/conversations", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return response.status_code


@pytest.mark.parametrize("role", ["client", "admin"])
def test_a_revoked_key_is_refused_at_once_by_every_process(
    servers: list[Server], role: str
) -> None:
    first, second = servers
    key = first.key("acme", role)
    other = first.key("acme", role)
    for _ in range(3):  # warm: each process's key cache holds the key now
        assert [_status(s, key) for s in servers] == [200, 200]
    mvm(second.workdir, "keys", "revoke", key[:10], env=second.env)
    assert [_status(s, key) for s in servers] == [401, 401]
    assert [_status(s, other) for s in servers] == [200, 200]


def test_the_first_start_prints_its_keys_once(
    standin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = Server(tmp_path_factory.mktemp("first-start"), _config(standin))  # SQLite
    try:
        server.start()
        server.stop()
        server.start()  # a restart on the same database prints nothing new
        log = server.log.read_text()
        assert log.count("First start:") == 1, log
        printed = dict(re.findall(r"^  (client|admin) key: +(mvm_\S+)$", log, re.MULTILINE))
        assert set(printed) == {"client", "admin"}, log
        for role, path, status in (
            ("client", "/v1/models", 200),
            ("client", "/admin/tenants", 403),
            ("admin", "/admin/tenants", 200),
        ):
            headers = {"Authorization": f"Bearer {printed[role]}"}
            response = httpx.get(f"{server.url}{path}", headers=headers, timeout=30)
            assert response.status_code == status, (role, path)
    finally:
        server.stop()
