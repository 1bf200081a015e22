"""Faults against real processes: a Redis server of the test's own, frozen and then stopped
under load, and started again (the engine faults are in test_faults_engine.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import MODEL_TOML, Server, free_port, unavailable

FAST_MODEL_TOML = MODEL_TOML.replace("max_tokens = 48", "max_tokens = 8")
REDIS_TIMEOUT_S = 0.25
RATE_LIMIT = 40
# Not a performance assertion but one of not blocking: a turn makes a few Redis calls (rate
# limit, cache read and write), each bounded by ``redis.timeout_s``, so Redis can add about a
# second; the rest is local generation, queued four deep on a shared 2-core machine. A call
# that waited on a frozen Redis without a timeout would not come back at all.
NOT_BLOCKED_S = 30.0


class RedisProcess:
    """``redis-server`` of the test's own on a fixed port, without persistence."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        assert binary is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        import redis

        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start: {self.log.read_text()}"
                    ) from None
                time.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, but nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # works on a stopped process too
            self.proc.wait(timeout=15)
        self.proc = None


@pytest.fixture(scope="module")
def redis_fault(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, RedisProcess]]:
    folder = tmp_path_factory.mktemp("redis-fault")
    redis_proc = RedisProcess(free_port(), folder / "redis.log").start()
    config = (
        FAST_MODEL_TOML
        + f"\n[redis]\ntimeout_s = {REDIS_TIMEOUT_S}\n"
        + f"\n[limits]\nrequests_per_minute = {RATE_LIMIT}\n"
    )
    env = {"MVM_CHAT_REDIS_URL": f"redis://127.0.0.1:{redis_proc.port}/0"}
    server = Server(folder / "server", config, env=env)
    try:
        server.start()
        yield server, redis_proc
    finally:
        server.stop()
        redis_proc.stop()


def _chat(server: Server, key: str, text: str) -> tuple[httpx.Response, float]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    started = time.monotonic()
    response = httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    )
    return response, time.monotonic() - started


def _cache_ready(server: Server) -> tuple[int, bool]:
    response = httpx.get(f"{server.url}/readyz", timeout=30)
    return response.status_code, bool(response.json()["checks"]["cache"]["ok"])


def test_redis_stopped_under_load_fails_open_and_recovers(
    redis_fault: tuple[Server, RedisProcess],
) -> None:
    server, redis_proc = redis_fault
    keys = [server.key("acme") for _ in range(4)]
    assert _cache_ready(server) == (200, True)

    results: list[tuple[str, int, float, str | None]] = []

    def client(index: int, label: str) -> None:
        for n in range(3):
            response, took = _chat(server, keys[index], f"Question {index}-{n} while {label}?")
            cache = response.json()["mvm"]["cache"] if response.status_code == 200 else None
            results.append((label, response.status_code, took, cache))

    def under_load(label: str, fault: Callable[[], None]) -> None:
        """Four clients send chats; ``fault`` strikes while they run."""
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client, i, label) for i in range(4)]
            time.sleep(1.0)
            fault()
            for future in futures:
                future.result()

    # frozen (SIGSTOP) for the whole round: a call without a timeout would never come back,
    # and the client's own timeout would fail the test
    under_load("freezing", redis_proc.pause)
    under_load("stopping", redis_proc.stop)  # then gone: refused at once

    assert [r for r in results if r[1] != 200] == [], results
    assert all(r[3] == "miss" for r in results), results
    slowest = max(r[2] for r in results)
    assert slowest < NOT_BLOCKED_S, results

    # the cache reads as a miss, so the same question twice is answered twice
    again = [_chat(server, keys[0], "Asked twice while Redis is down")[0] for _ in range(2)]
    assert [r.json()["mvm"]["cache"] for r in again] == ["miss", "miss"]
    assert _cache_ready(server) == (503, False)

    # rate limits fall back to a per-process count of the same limit, never none
    limited_key = server.key("acme")
    statuses: list[int] = []
    for _ in range(2 * RATE_LIMIT + 1):  # a minute boundary may reset the window once
        reply = httpx.get(
            f"{server.url}/v1/models",
            headers={"Authorization": f"Bearer {limited_key}"},
            timeout=30,
        )
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            assert int(reply.headers["Retry-After"]) >= 1
            assert reply.headers["content-type"].startswith("application/problem+json")
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {200}, statuses
    assert len(statuses) > RATE_LIMIT - 1, statuses

    # Redis back on the same port: used again without a restart (after any breaker cool-down)
    redis_proc.start()
    deadline = time.monotonic() + 60
    seen: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        question = f"Asked twice after Redis came back ({len(seen)})"
        first = _chat(server, keys[1], question)[0].json()["mvm"]["cache"]
        second = _chat(server, keys[1], question)[0].json()["mvm"]["cache"]
        seen.append((first, second))
        if second == "hit":
            break
        time.sleep(1)
    assert seen[-1] == ("miss", "hit"), seen
    assert _cache_ready(server) == (200, True)
    import redis

    assert redis.Redis(port=redis_proc.port).dbsize() > 0, "answers are stored in Redis again"
