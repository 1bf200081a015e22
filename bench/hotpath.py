"""The gateway's hot path measured: mvm_chat on Postgres and Redis in front of an instant
OpenAI-compatible upstream, driven by ``wrk``.

    .venv/bin/python bench/hotpath.py [--duration 10] [--workers 1] [--label NAME]
                                      [--profile DIR]

Starts the gateway benchmark's stand-in upstream (``bench/upstream.py``: a fixed completion,
streamed or whole as asked, answered at once), a fresh Postgres
database (``mvm-chat db upgrade``), ``mvm-chat serve`` with one ``openai`` model and no local
model, then measures with ``wrk`` (``Cache-Control: no-cache``) at 1 and 16 connections, the
direct upstream at 1 connection (for the added latency), an exact cache hit's time inside the
server (its ``Server-Timing`` header) and exact cache hits with ``wrk`` at 1 and 16
connections. Reports requests/s, latency p50/p99, the server's CPU time per request, its
resident memory after the load, and the machine's load average.
Writes ``bench/results/hotpath-DATE[-NAME].json``. With ``--profile DIR`` py-spy's folded
stacks of the c=16 runs are written there (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_services import start_upstream
from intents import machine
from processes import (
    ADMIN_POSTGRES,
    REDIS_URL,
    Process,
    drop_redis_prefix,
    free_port,
    wait_http,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[server]
log_level = "warning"

[redis]
url = "{redis}"
key_prefix = "{prefix}"

[[tiers]]
name = "api"

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "{upstream}"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
max_tokens = 64

[routing]
default_tier = "api"
baseline_model = "frontier"
"""
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Where is my card?"}]}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
{extra}
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""

# -- the measurement ------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed (apt-get install -y {name})")
    return found


def _pg(statement: str) -> None:
    subprocess.run(  # noqa: S603
        [_tool("psql"), ADMIN_POSTGRES, "-q", "-c", statement],
        check=True,
        capture_output=True,
        text=True,
    )


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its children (the workers)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for each in [pid, *(int(p) for p in children.read_text().split())]:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk(
    url: str, key: str, connections: int, duration: int, cache: bool, pid: int | None = None
) -> dict[str, Any]:
    """Run wrk against ``url``; requests/s, latency percentiles in ms and, with ``pid``, the
    server's CPU time per request (a figure that the machine's other load disturbs less)."""
    before = cpu_s(pid) if pid else 0.0
    extra = "" if cache else 'wrk.headers["Cache-Control"] = "no-cache"'
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(BODY), key=key, extra=extra))
    threads = 1 if connections < 4 else 2
    out = subprocess.run(  # noqa: S603
        [
            _tool("wrk"),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, micros, p50, p99, bad_status, socket_errors = map(int, line.split()[1:])
    found = {
        "connections": connections,
        "requests": requests,
        "rps": round(requests / (micros / 1e6), 1),
        "p50_ms": round(p50 / 1000, 3),
        "p99_ms": round(p99 / 1000, 3),
        "errors": bad_status + socket_errors,
    }
    if pid:
        found["cpu_ms_per_request"] = round((cpu_s(pid) - before) * 1000 / max(requests, 1), 3)
    return found


def check_answer(base: str, key: str) -> None:
    """Stop unless the gateway answers from the upstream (wrk counts any 200 as a success, a
    hand-off to a person too)."""
    response = httpx.post(
        f"{base}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"},
        timeout=30,
    )
    mvm = response.json().get("mvm") or {} if response.status_code == 200 else {}
    if mvm.get("model") != "frontier":
        sys.exit(f"mvm_chat did not answer from the upstream: {response.text[:500]}")


def cache_hit_server_ms(base: str, key: str, n: int = 400) -> dict[str, float]:
    """An exact cache hit's duration inside the server (``Server-Timing``), sequentially."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {**BODY, "messages": [{"role": "user", "content": f"cache probe {uuid.uuid4()}"}]}
    times: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        client.post("/v1/chat/completions", json=body).raise_for_status()  # fills the cache
        for _ in range(n):
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            assert response.json()["mvm"]["cache"] == "hit"
            timing = response.headers.get("server-timing")
            if timing is None:  # a server without the header: the client's round trip
                times.append(response.elapsed.total_seconds() * 1000)
            else:
                times.append(float(timing.split("dur=")[1].split(",")[0]))
    times.sort()
    return {
        "n": n,
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[int(0.99 * (n - 1))], 3),
    }


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS of ``pid`` and of each of its children (the workers), in MB."""
    found: dict[str, float] = {}
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                found[str(each)] = round(int(line.split()[1]) / 1024, 1)
    return found


def _profile(
    folder: Path | None, name: str, pid: int, duration: int, wanted: bool = True
) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` (and its workers) for ``duration`` s into ``folder/NAME.folded``."""
    if folder is None or not wanted:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    out = str(folder / f"{name}.folded")
    args = [spy, "record", "--pid", str(pid), "--subprocesses", "-d", str(duration)]
    return subprocess.Popen(  # noqa: S603 (our own arguments)
        [*args, "-f", "raw", "-o", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--label", default="", help="suffix of the JSON file (e.g. before)")
    parser.add_argument("--profile", type=Path, default=None, help="folder for py-spy output")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mvm-hotpath-"))
    database = f"mvm_bench_{uuid.uuid4().hex[:10]}"
    port = free_port()
    upstream, upstream_url = start_upstream(work, tokens=0, delay_ms=0.0)
    _pg(f'CREATE DATABASE "{database}"')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MVM_CHAT_")},
        "MVM_CHAT_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
    }
    (work / "mvm_chat.toml").write_text(
        CONFIG.format(redis=REDIS_URL, prefix=f"bench-{database}:", upstream=f"{upstream_url}/v1")
    )
    cli = [sys.executable, "-m", "mvm_chat"]
    server: Process | None = None
    try:
        upgrade = [*cli, "db", "upgrade"]
        subprocess.run(upgrade, cwd=work, env=env, check=True, capture_output=True)  # noqa: S603
        made = subprocess.run(  # noqa: S603
            [*cli, "keys", "create", "--tenant", "bench", "--role", "client"],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = made.stdout.strip().splitlines()[-1]
        serve = [*cli, "serve", "--port", str(port)]
        if args.workers > 1:
            serve += ["--workers", str(args.workers)]
        server = Process.start("mvm_chat", serve, work / "server.log", env)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", server)
        chat = f"{base}/v1/chat/completions"
        check_answer(base, key)
        wrk(chat, key, 4, 2, cache=False)  # warm up
        results: dict[str, Any] = {
            "upstream_c1": wrk(f"{upstream_url}/v1/chat/completions", key, 1, args.duration, False)
        }
        for c in (int(x) for x in args.connections.split(",")):
            spy = _profile(args.profile, f"nocache-c{c}", server.popen.pid, args.duration, c == 16)
            results[f"nocache_c{c}"] = wrk(chat, key, c, args.duration, False, server.popen.pid)
            if spy is not None:
                spy.wait()
        results["rss_mb_after_load"] = rss_mb(server.popen.pid)
        results["cache_hit_server"] = cache_hit_server_ms(base, key)
        results["cache_hit_c1"] = wrk(chat, key, 1, args.duration, True, server.popen.pid)
        spy = _profile(args.profile, "cache-hit-c16", server.popen.pid, args.duration)
        results["cache_hit_c16"] = wrk(chat, key, 16, args.duration, True, server.popen.pid)
        if spy is not None:
            spy.wait()
        up = results["upstream_c1"]
        if "nocache_c1" in results:
            c1 = results["nocache_c1"]
            results["added_c1_ms"] = {
                "p50": round(c1["p50_ms"] - up["p50_ms"], 3),
                "p99": round(c1["p99_ms"] - up["p99_ms"], 3),
            }
        record = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "load_average": os.getloadavg(),
            "label": args.label,
            "workers": args.workers,
            "duration_s": args.duration,
            "results": results,
        }
        print(json.dumps(record, indent=2))
        suffix = f"-{args.label}" if args.label else ""
        out = ROOT / "bench" / "results" / f"hotpath-{dt.date.today().isoformat()}{suffix}.json"
        out.write_text(json.dumps(record, indent=2) + "\n")
    finally:
        for proc in (server, upstream):
            if proc is not None:
                proc.stop()
        _pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        drop_redis_prefix(REDIS_URL, f"bench-{database}:")


if __name__ == "__main__":
    main()
