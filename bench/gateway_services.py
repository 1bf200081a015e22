"""The processes the gateway benchmark drives: the stand-in upstream, mvm_chat (on a database
and a Redis key prefix of its own) and LiteLLM's proxy, and the tools they need."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_MASTER_KEY = "sk-bench-master"
PRICE_INPUT_PER_MTOK = "2.50"
PRICE_OUTPUT_PER_MTOK = "10.00"


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
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    info["load_average"] = load_average()
    return info


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


def ensure_wrk() -> str:
    """The path of ``wrk``; installed from Debian when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("bench: wrk is missing; install it with `sudo apt-get install wrk` and rerun")
    log("installing wrk from Debian (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(apt, env=env, check=False).returncode != 0:  # noqa: S603
        subprocess.run(["apt-get", "update"], env=env, check=False)  # noqa: S607
        subprocess.run(apt, env=env, check=True)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk could not be installed")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)  # noqa: S603
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


def ensure_litellm() -> tuple[Path | None, str]:
    """LiteLLM's ``litellm`` command in ``bench/.venv-litellm`` (created when missing) and its
    version; ``(None, reason)`` when it cannot be installed."""
    litellm = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if not litellm.exists():
        log(f"installing litellm[proxy] into {LITELLM_VENV} (a few minutes, once)")
        try:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)  # noqa: S603
            subprocess.run(  # noqa: S603
                [str(python), "-m", "pip", "install", "--quiet", "litellm[proxy]"],
                check=True,
                timeout=1800,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"litellm could not be installed: {exc}"
    if not litellm.exists():
        return None, "litellm could not be installed (no litellm command in its venv)"
    out = subprocess.run(  # noqa: S603
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return litellm, out.stdout.strip() or "unknown"


def start_upstream(work: Path, tokens: int, delay_ms: float) -> tuple[Process, str]:
    port = free_port()
    argv = [sys.executable, str(BENCH / "upstream.py"), "--port", str(port)]
    argv += ["--tokens", str(tokens), "--delay-ms", str(delay_ms)]
    proc = Process.start("upstream", argv, work / "upstream.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return proc, url


MVM_CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "{database_url}"

[redis]
url = "{redis_url}"
key_prefix = "{redis_prefix}"
{catalog}
"""

GATEWAY_CATALOG = """
[[tiers]]
name = "api"

[[models]]
name = "bench"
tier = "api"
engine = "openai"
base_url = "{upstream}/v1"
upstream_model = "bench"
price_input_per_mtok = "{price_in}"
price_output_per_mtok = "{price_out}"
max_queue = 1024

[[models]]
name = "bench-paced"
tier = "api"
engine = "openai"
base_url = "{upstream}/v1"
upstream_model = "paced"
price_input_per_mtok = "{price_in}"
price_output_per_mtok = "{price_out}"
max_queue = 1024

[routing]
default_tier = "api"
baseline_model = "bench"
"""


def gateway_catalog(upstream: str) -> str:
    """mvm_chat's catalog for the gateway benchmark: one ``api`` tier of two ``openai``-engine
    models on the stand-in upstream (``auto`` picks ``bench``; ``bench-paced`` streams paced
    tokens), no local model."""
    return GATEWAY_CATALOG.format(
        upstream=upstream, price_in=PRICE_INPUT_PER_MTOK, price_out=PRICE_OUTPUT_PER_MTOK
    )


async def _pg_exec(admin_dsn: str, statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class MvmChat:
    """``mvm-chat serve`` (one worker) on a fresh Postgres database and a Redis key prefix."""

    work: Path
    catalog: str
    postgres: str
    redis_url: str
    database: str = field(default_factory=lambda: f"mvm_bench_{uuid.uuid4().hex[:10]}")
    redis_prefix: str = field(default_factory=lambda: f"mvm-bench-{uuid.uuid4().hex[:10]}:")
    port: int = field(default_factory=free_port)
    proc: Process | None = None
    key: str = ""
    created_db: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.work / "mvm_chat.toml"

    def _cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MVM_CHAT_")}
        out = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "mvm_chat", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.work,
            check=False,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"mvm-chat {' '.join(args)} failed:\n{out.stderr[-3000:]}")
        return out.stdout

    def start(self) -> MvmChat:
        asyncio.run(_pg_exec(self.postgres, f'CREATE DATABASE "{self.database}"'))
        self.created_db = True
        database_url = f"{self.postgres.rsplit('/', 1)[0]}/{self.database}".replace(
            "postgresql://", "postgresql+asyncpg://"
        )
        self.config_path.write_text(
            MVM_CONFIG.format(
                port=self.port,
                database_url=database_url,
                redis_url=self.redis_url,
                redis_prefix=self.redis_prefix,
                catalog=self.catalog,
            )
        )
        self._cli("db", "upgrade")
        self.key = self._cli("keys", "create", "--tenant", "bench").strip().splitlines()[-1]
        argv = [sys.executable, "-m", "mvm_chat", "--config", str(self.config_path), "serve"]
        argv += ["--port", str(self.port)]
        if "--workers" in self._cli("serve", "--help"):
            argv += ["--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MVM_CHAT_")}
        self.proc = Process.start("mvm_chat", argv, self.work / "mvm_chat.log", env)
        wait_http(f"{self.url}/readyz", self.proc, timeout_s=300)
        return self

    def ledger_rows(self) -> int:
        async def count() -> int:
            import asyncpg

            dsn = f"{self.postgres.rsplit('/', 1)[0]}/{self.database}"
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM ledger_entries"))
            finally:
                await conn.close()

        return asyncio.run(count())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        if self.created_db:
            statement = f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'
            asyncio.run(_pg_exec(self.postgres, statement))
        try:
            import redis

            client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
            for key in client.scan_iter(match=self.redis_prefix + "*", count=1000):
                client.delete(key)
            client.close()
        except Exception as exc:  # a cleanup failure must not hide the figures
            log(f"could not clean Redis prefix {self.redis_prefix}: {exc}")


LITELLM_CONFIG = """model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: {upstream}/v1
      api_key: x
    model_info:
      input_cost_per_token: {price_in}
      output_cost_per_token: {price_out}
  - model_name: paced
    litellm_params:
      model: openai/paced
      api_base: {upstream}/v1
      api_key: x
    model_info:
      input_cost_per_token: {price_in}
      output_cost_per_token: {price_out}
general_settings:
  master_key: {master_key}
"""


def start_litellm(litellm: Path, work: Path, upstream: str) -> tuple[Process, str]:
    """LiteLLM's proxy, one worker, no database, the same upstream and prices."""
    config = work / "litellm.yaml"
    per_token = 1_000_000
    config.write_text(
        LITELLM_CONFIG.format(
            upstream=upstream,
            price_in=float(PRICE_INPUT_PER_MTOK) / per_token,
            price_out=float(PRICE_OUTPUT_PER_MTOK) / per_token,
            master_key=LITELLM_MASTER_KEY,
        )
    )
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV", "REDIS_URL")
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network fetch at start
    env["PATH"] = f"{litellm.parent}:{env.get('PATH', '')}"
    argv = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    proc = Process.start("litellm", argv, work / "litellm.log", env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", proc, timeout_s=240)
    return proc, url
