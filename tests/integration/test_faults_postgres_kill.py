"""Faults against real processes: the server SIGKILLed mid-stream, and Postgres stopped.

Both use Postgres (the shared one through ``pg_url``, and a private cluster that this module
starts and stops itself, so that stopping it affects no other test).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import MODEL_TOML, Server, free_port, mvm, unavailable

LONG_TOML = MODEL_TOML.replace("max_tokens = 48", "max_tokens = 400")
assert LONG_TOML != MODEL_TOML
LONG_PROMPT = "Write a very long story about a bank clerk, with many details, in ten chapters."


def _rows(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    parsed = make_url(url)

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            database=parsed.database,
            timeout=5,
        )
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _counts(url: str) -> tuple[object, ...]:
    return _rows(
        url,
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
        " (SELECT count(*) FROM ledger_entries)",
    )[0]


def _assert_consistent(api: httpx.Client, url: str, conversation_id: str) -> None:
    """Messages alternate user/assistant from the start; every assistant message has
    exactly one set of ledger rows, and no ledger row points at a message that is not there."""
    detail = api.get(f"/v1/conversations/{conversation_id}")
    assert detail.status_code == 200, detail.text
    roles = [m["role"] for m in detail.json()["messages"]]
    assert roles == ["user", "assistant"] * (len(roles) // 2), roles
    answers = {m["id"] for m in detail.json()["messages"] if m["role"] == "assistant"}
    ledger = _rows(
        url,
        "SELECT message_id, request_id, attempt FROM ledger_entries WHERE conversation_id = $1",
        conversation_id,
    )
    assert len(set(ledger)) == len(ledger), f"duplicate ledger rows: {ledger}"
    assert {row[0] for row in ledger} == answers
    for message_id in answers:
        requests = {row[1] for row in ledger if row[0] == message_id}
        assert len(requests) == 1, f"{message_id} billed by {requests}"


# -- the server SIGKILLed mid-stream ---------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("kill-server")
    env = {"MVM_CHAT_DATABASE_URL": pg_url}
    mvm(workdir, "db", "upgrade", env=env)
    server = Server(workdir, LONG_TOML, env=env).start()
    yield server
    server.stop()


def _stream(
    server: Server,
    key: str,
    conversation_id: str,
    headers: dict[str, str],
    body: dict[str, object],
    opened: threading.Event | None = None,
    started: threading.Event | None = None,
) -> list[dict[str, object]]:
    """Stream an answer; ``opened`` is set at its first frame, ``started`` at its first token.
    Returns the frames it got before the stream ended (or broke)."""
    frames: list[dict[str, object]] = []
    try:
        with httpx.stream(
            "POST",
            f"{server.url}/v1/conversations/{conversation_id}/messages",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache", **headers},
            timeout=120,
        ) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith("data:"):
                    frames.append(json.loads(line.removeprefix("data:")))
                    if opened is not None:
                        opened.set()
                    if started is not None and frames[-1]["type"] == "token":
                        started.set()
    except httpx.TransportError:
        pass  # the server was killed
    finally:
        for event in (opened, started):
            if event is not None:
                event.set()
    return frames


def test_sigkill_mid_stream_leaves_one_bill_per_reply(pg_server: Server, pg_url: str) -> None:
    key = pg_server.key("acme")
    auth = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
    with httpx.Client(base_url=pg_server.url, headers=auth, timeout=120) as api:
        # replies completed before the kill, with keys: one JSON, one streamed
        done_id = api.post("/v1/conversations", json={}).json()["id"]
        done_key = {"Idempotency-Key": uuid.uuid4().hex}
        done_body = {"content": "What is a debit card?", "max_tokens": 30}
        done_url = f"/v1/conversations/{done_id}/messages"
        done = api.post(done_url, json=done_body, headers=done_key)
        assert done.status_code == 200, done.text
        streamed_id = api.post("/v1/conversations", json={}).json()["id"]
        streamed_key = {"Idempotency-Key": uuid.uuid4().hex}
        streamed_body: dict[str, object] = {"content": "What is a loan?", "max_tokens": 30}
        streamed = _stream(pg_server, key, streamed_id, streamed_key, streamed_body)
        assert streamed[-1]["type"] == "done", streamed[-1]

        # three long streams, two with a key, killed while the first one is generating
        long_body: dict[str, object] = {"content": LONG_PROMPT, "max_tokens": 400}
        conversations = [api.post("/v1/conversations", json={}).json()["id"] for _ in range(3)]
        keys = [{"Idempotency-Key": uuid.uuid4().hex}, {"Idempotency-Key": uuid.uuid4().hex}, {}]
        started = threading.Event()
        opened = [threading.Event() for _ in conversations]
        results: list[list[dict[str, object]]] = [[] for _ in conversations]

        def run(i: int) -> None:
            event = started if i == 0 else None
            results[i] = _stream(
                pg_server, key, conversations[i], keys[i], long_body, opened[i], event
            )

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        threads[0].start()
        assert started.wait(60), "the stream did not start"
        for thread in threads[1:]:
            thread.start()
        for event in opened:
            assert event.wait(60), "a stream was not answered"
        assert pg_server.proc is not None
        pg_server.proc.kill()
        pg_server.proc.wait(timeout=15)
        for thread in threads:
            thread.join(timeout=60)
        # the first stream was cut mid-way: tokens, but no final frame
        types = [f["type"] for f in results[0]]
        assert "token" in types and "done" not in types and "error" not in types, types

        pg_server.start()  # same folder, same port
        for conversation_id in [done_id, streamed_id, *conversations]:
            _assert_consistent(api, pg_url, conversation_id)
        # what was cut before its end stored nothing
        assert _rows(
            pg_url, "SELECT count(*) FROM messages WHERE conversation_id = $1", conversations[0]
        ) == [(0,)]

        # the completed replies are replayed: same answers, nothing billed again
        before = _counts(pg_url)
        again = api.post(done_url, json=done_body, headers=done_key)
        assert again.status_code == 200, again.text
        assert again.json() == done.json()
        replayed = _stream(pg_server, key, streamed_id, streamed_key, streamed_body)
        assert replayed[-1]["type"] == "done"
        assert replayed[-1]["message_id"] == streamed[-1]["message_id"]
        assert replayed[-1]["content"] == streamed[-1]["content"]
        assert _counts(pg_url) == before

        # a key whose turn was cut before anything was stored stays claimed ("running") until
        # STALE_AFTER (10 minutes) has passed: a retry meanwhile is 409 and runs nothing
        retry = api.post(
            f"/v1/conversations/{conversations[0]}/messages",
            json={**long_body, "stream": True},
            headers=keys[0],
        )
        assert retry.status_code == 409, retry.text
        assert retry.headers["content-type"].startswith("application/problem+json")
        assert "Idempotency-Key" in retry.json()["detail"]
        assert _counts(pg_url) == before
        _assert_consistent(api, pg_url, conversations[0])


# -- Postgres stopped -----------------------------------------------------------------------


class Cluster:
    """A private PostgreSQL cluster in a temporary folder, run as the ``postgres`` user when
    this process is root (``initdb`` refuses root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            unavailable("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="mvm-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                unavailable("running as root without runuser: cannot run initdb")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/mvm"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{args[0]} failed:\n{result.stderr}\n{log[-2000:]}")

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()
        self._run(
            str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "mvm",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                 "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    try:
        pg.init()
        yield pg
    finally:
        pg.remove()


def _assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert body["status"] == 503
    assert body["title"] == "Service Unavailable"
    assert "Traceback" not in response.text


def test_postgres_stopped_is_503_and_service_resumes(cluster: Cluster, tmp_path: Path) -> None:
    env = {"MVM_CHAT_DATABASE_URL": cluster.url}
    mvm(tmp_path, "db", "upgrade", env=env)
    server = Server(tmp_path, LONG_TOML, env=env).start()
    try:
        key = server.key("acme")
        auth = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
        plain = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as api:
            conversation_id = api.post("/v1/conversations", json={}).json()["id"]
            url = f"/v1/conversations/{conversation_id}/messages"
            assert api.post(url, json={"content": "Hi", "max_tokens": 8}).status_code == 200
            before = _counts(cluster.url)

            cluster.stop()
            _assert_503(api.post(url, json={"content": "Are you there?", "max_tokens": 8}))
            streamed = {"content": "Are you there?", "max_tokens": 8, "stream": True}
            _assert_503(api.post(url, json=streamed))
            _assert_503(api.post("/v1/chat/completions", json={**plain, "model": "auto"}))
            _assert_503(api.post("/v1/conversations", json={}))
            _assert_503(api.get(f"/v1/conversations/{conversation_id}"))

            cluster.start()
            deadline = time.monotonic() + 30
            while True:
                resumed = api.post(url, json={"content": "Back?", "max_tokens": 8})
                if resumed.status_code == 200 or time.monotonic() > deadline:
                    break
                _assert_503(resumed)
                time.sleep(0.5)
            assert resumed.status_code == 200, resumed.text
            after = _counts(cluster.url)
            # the requests made while Postgres was down left nothing; the one after, one turn
            assert after == (before[0], int(str(before[1])) + 2, int(str(before[2])) + 1)
            _assert_consistent(api, cluster.url, conversation_id)
    finally:
        server.stop()
