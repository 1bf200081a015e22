"""The processes the gateway benchmark drives: the stand-in upstream, mvm_chat (on a database
and a Redis key prefix of its own) and LiteLLM's proxy, and the tools they need."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from processes import Process, drop_redis_prefix, free_port, log, wait_http

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_MASTER_KEY = "sk-bench-master"
PRICE_INPUT_PER_MTOK = "2.50"
PRICE_OUTPUT_PER_MTOK = "10.00"


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
        drop_redis_prefix(self.redis_url, self.redis_prefix)


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
