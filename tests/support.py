"""Test helpers: real server processes on 127.0.0.1 and the services they need."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
MODEL_TOML = """
[[tiers]]
name = "local"

[[models]]
name = "smollm2-135m"
tier = "local"
engine = "llamacpp"
path = "builtin:smollm2-135m"
max_tokens = 48
temperature = 0.0
"""
REDIS_UP_TIMEOUT_S = 30.0
"""``redis.timeout_s`` for tests whose Redis is up and must answer. The default (0.25 s) is
short on purpose: a call past it fails open (a cache miss, a count of this process's own) and
leaves Redis alone for ``COOLDOWN_S``, which a stall on a busy machine would turn into a wrong
result."""


def redis_toml(url: str, prefix: str) -> str:
    """A ``[redis]`` table for a Redis that is up (see :data:`REDIS_UP_TIMEOUT_S`)."""
    return f'\n[redis]\nurl = "{url}"\nkey_prefix = "{prefix}"\ntimeout_s = {REDIS_UP_TIMEOUT_S}\n'


def until(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` until it is true; fail with ``what`` after ``timeout_s`` (generous:
    background work on a busy machine can take seconds)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def unavailable(reason: str) -> None:
    """Skip for a missing service, except under CI where nothing may skip for that reason."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test may not skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    timeout_s: float = 90.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            output = log.read_text() if log else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{output[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def mvm(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the ``mvm-chat`` command in ``cwd``."""
    result = subprocess.run(
        [sys.executable, "-m", "mvm_chat", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mvm-chat {' '.join(args)} failed:\n{result.stderr}")
    return result


class Server:
    """``mvm-chat serve`` in a folder of its own, with ``mvm_chat.toml`` written there."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "mvm_chat.toml").write_text(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MVM_CHAT_")}
        self.env.update(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mvm_chat", "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_http(f"{self.url}/readyz", proc=self.proc, log=self.log)
        except BaseException:
            self.stop()  # never leave a server behind
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def key(self, tenant: str, role: str = "client") -> str:
        """A new key from ``mvm-chat keys create``: the last line of its output."""
        result = mvm(
            self.workdir, "keys", "create", "--tenant", tenant, "--role", role, env=self.env
        )
        return result.stdout.strip().splitlines()[-1]


class LlamaCppServer:
    """llama-cpp-python's own OpenAI-compatible server with SmolLM2 (model alias ``smol``):
    a real upstream on 127.0.0.1 that a test may stop and start again on the same port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaCppServer:
        from mvm_chat.engines.llamacpp import resolve_model_path

        model = str(resolve_model_path("builtin:smollm2-135m"))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    model,
                    "--model_alias",
                    "smol",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--n_ctx",
                    "2048",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_http(f"{self.api_base}/models", proc=self.proc, log=self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None


def query_db(url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """The rows of one SQL statement on the database at ``url`` (SQLite or Postgres)."""
    from sqlalchemy import text

    from mvm_chat.store.db import Database

    async def run() -> list[tuple[Any, ...]]:
        db = Database(url)
        try:
            async with db.session() as session:
                return [tuple(row) for row in (await session.execute(text(sql), params)).all()]
        finally:
            await db.dispose()

    return asyncio.run(run())
