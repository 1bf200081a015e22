"""``mvm-chat serve --workers N``: several processes on one port, sharing Postgres and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import MODEL_TOML, free_port, mvm, redis_toml, wait_http


def _workers_of(pid: int) -> list[int]:
    """The uvicorn worker processes of ``pid`` (multiprocessing's spawned children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@pytest.fixture(scope="module")
def two_workers(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, int]]:
    workdir = tmp_path_factory.mktemp("workers")
    config = MODEL_TOML + redis_toml(redis_url, f"{redis_prefix}w:")
    (workdir / "mvm_chat.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MVM_CHAT_")}
    env["MVM_CHAT_DATABASE_URL"] = pg_url
    mvm(workdir, "db", "upgrade", env=env)
    key = mvm(workdir, "keys", "create", "--tenant", "w", env=env).stdout.strip().splitlines()[-1]
    port = free_port()
    log = workdir / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mvm_chat", "serve", "--port", str(port), "--workers", "2"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", proc=proc, log=log)
        yield url, key, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_workers_serve_turns_from_one_store(two_workers: tuple[str, str, int]) -> None:
    url, key, pid = two_workers
    assert len(_workers_of(pid)) == 2
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}

    def ask(i: int) -> httpx.Response:
        body = {
            "model": "auto",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": f"Say the number {i}."}],
        }
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(6)))
    assert [r.status_code for r in replies] == [200] * 6
    # every turn was stored where every worker reads it
    for reply in replies:
        conversation_id = reply.json()["mvm"]["conversation_id"]
        stored = httpx.get(f"{url}/v1/conversations/{conversation_id}", headers=headers)
        assert stored.status_code == 200
        assert [m["role"] for m in stored.json()["messages"]] == ["user", "assistant"]


def test_several_workers_refuse_the_embedded_setup(tmp_path: Path) -> None:
    (tmp_path / "mvm_chat.toml").write_text(MODEL_TOML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MVM_CHAT_")}
    refused = mvm(tmp_path, "serve", "--workers", "2", env=env, check=False)
    assert refused.returncode == 2
    assert "needs Postgres (database.url) and Redis (redis.url)" in refused.stderr
    assert not (tmp_path / "var").exists(), "nothing was created before the refusal"
