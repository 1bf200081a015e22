"""Child processes of the benchmarks and what they record about them: ports, logs, the
machine, the commit measured, resident memory."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import intents

ROOT = Path(__file__).resolve().parents[1]
ADMIN_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
"""Where the harnesses create (and drop) a database of their own for each run."""
REDIS_URL = "redis://127.0.0.1:6379/0"


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """``--postgres`` and ``--redis``, with the local services as defaults."""
    parser.add_argument(
        "--postgres",
        default=ADMIN_POSTGRES,
        help="an admin DSN; a database is created there for the run and dropped after",
    )
    parser.add_argument("--redis", default=REDIS_URL)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load average of this machine."""
    info = intents.machine()  # CPU model and memory, as every harness reports them
    return {
        "nproc": info.pop("cores"),
        **info,
        "kernel": platform.release(),
        "load_average": load_average(),
    }


def source_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        argv = ["git", *args]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def wait_http(url: str, proc: Process, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: {url} did not answer within {timeout_s:.0f}s\n{proc.tail()}")


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> Process:
        with log_path.open("ab") as out:
            popen = subprocess.Popen(  # noqa: S603 (our own arguments)
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent
            )
        return cls(name, popen, log_path)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in _children(pid):
        pids += _tree(child)
    return pids


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of the process, or of its largest descendant (a worker)."""
    best: dict[str, int] = {}
    for each in _tree(pid):
        values: dict[str, int] = {}
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line.split(":")[0]] = int(line.split()[1])
        except OSError:
            continue
        if values.get("VmRSS", 0) > best.get("VmRSS", 0):
            best = values | {"pid": each}
    return best


class MemorySampler:
    """Samples a process tree's resident memory twice a second while a load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_rss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.max_rss_kib = max(self.max_rss_kib, memory_kib(self.pid).get("VmRSS", 0))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def drop_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a harness's own), reporting rather than raising:
    a failed cleanup must not hide the figures."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5)
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()
    except Exception as exc:
        log(f"could not clean Redis prefix {prefix}: {exc}")
