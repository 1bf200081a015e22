"""The soak test of issue 8: mixed REST, streaming and WebSocket traffic against one worker.

    .venv/bin/python bench/soak.py [--duration 600] [--clients 50] [--warmup 60]
    # or: mvm-chat bench soak [the same options], or: make bench-soak

Starts the stand-in upstream (``bench/upstream.py``) and ``mvm-chat serve`` (one worker, a fresh
Postgres database, its own Redis key prefix, the ledger on, one ``openai``-engine tier; both
removed afterwards), then ``bench/soak_clients.py`` in a process of its own: ``--clients``
concurrent clients for ``--warmup`` seconds, a pause while every client is disconnected, then
``--duration`` measured seconds. Samples the worker's VmRSS, open file descriptors (by peer:
clients, Postgres, Redis, upstream, other) and Postgres connections every ``--sample-s``
seconds, and once at rest after the warm-up and after the run; then checks that every
completed reply has exactly one ledger row. Prints a table, writes
``bench/results/soak-DATE.json`` and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway_load import Target, check_once
from gateway_services import BENCH, MvmChat, gateway_catalog, start_upstream
from processes import (
    Process,
    add_service_options,
    load_average,
    log,
    machine,
    memory_kib,
    source_state,
)
from soak_report import figures, server_log, summarise, targets, text

RESULTS = BENCH / "results"
SETTLE_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=8)
    add_service_options(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    parser.add_argument("--tag", default="", help="appended to the result file name")
    args = parser.parse_args(argv)
    if min(args.warmup, args.duration) < 2 * args.sample_s:
        parser.error("--warmup and --duration must each be at least two --sample-s")
    return args


def _pg(dsn: str, query: str, *params: object) -> list[Any]:
    async def fetch() -> list[Any]:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return list(await conn.fetch(query, *params))
        finally:
            await conn.close()

    return asyncio.run(fetch())


def open_fds(pid: int, peers: dict[int, str]) -> dict[str, int]:
    """The process's open descriptors by what they are: a TCP socket by the port of its peer
    (``peers``: port to name; ``clients``: accepted on its own listening port), else
    ``other``."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            name = peers.get(remote) or ("listening" if remote == 0 else peers.get(-local))
            sockets[fields[9]] = name or "other sockets"
    found: dict[str, int] = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        kind = sockets.get(target[8:-1], "other") if target.startswith("socket:[") else "other"
        found[kind] = found.get(kind, 0) + 1
    return found


class Sampler:
    """The worker's VmRSS, open descriptors and Postgres connections, now and periodically."""

    def __init__(
        self, pid: int, admin_dsn: str, database: str, peers: dict[int, str], every_s: float
    ) -> None:
        self.pid, self.admin_dsn, self.database = pid, admin_dsn, database
        self.peers, self.every_s = peers, every_s
        self.phase = "idle"
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, label: str | None = None) -> dict[str, Any]:
        memory = memory_kib(self.pid)
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        found = {
            "t": round(time.time(), 3),
            "phase": label or self.phase,
            "rss_kib": memory.get("VmRSS", 0),
            "hwm_kib": memory.get("VmHWM", 0),
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "fds_by_kind": open_fds(self.pid, self.peers),
            "pg_connections": int(_pg(self.admin_dsn, query, self.database)[0][0]),
            "load_average": load_average(),
        }
        self.samples.append(found)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sample()
            except Exception as exc:  # one lost sample must not end the sampling
                log(f"sample failed: {type(exc).__name__}: {exc}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _drive(args: argparse.Namespace, mvm: MvmChat, sampler: Sampler, out: Path) -> dict[str, Any]:
    """Run the client process through its phases; the quiet samples and its results."""
    argv = [sys.executable, str(BENCH / "soak_clients.py"), "--url", mvm.url, "--key", mvm.key]
    argv += ["--out", str(out), "--clients", str(args.clients), "--seed", str(args.seed)]
    argv += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
    with (mvm.work / "clients.log").open("ab") as errors:
        proc = subprocess.Popen(  # noqa: S603 (our own arguments)
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    limit = threading.Timer(args.warmup + args.duration + 600, proc.kill)
    limit.start()
    quiet: dict[str, dict[str, Any]] = {}
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)["event"]
            log(f"clients: {event}")
            if event == "start":
                sampler.phase = "warmup"
                sampler.start()
            elif event == "paused":
                sampler.phase = "paused"
                time.sleep(SETTLE_S)
                quiet["after_warmup"] = sampler.sample("quiet after warm-up")
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif event == "soak":
                sampler.phase = "soak"
            elif event == "done":
                sampler.phase = "drained"
                sampler.stop()
                time.sleep(SETTLE_S)
                quiet["end"] = sampler.sample("quiet at the end")
        if proc.wait() != 0 or "end" not in quiet:
            tail = (mvm.work / "clients.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the client process failed ({proc.returncode}):\n{tail}")
    finally:
        limit.cancel()
        if proc.poll() is None:
            proc.kill()
    clients: dict[str, Any] = json.loads(out.read_text())
    return {"quiet": quiet, "clients": clients}


def _ledger(mvm: MvmChat, admin_dsn: str, replies: list[str]) -> dict[str, Any]:
    """Whether each completed reply has exactly one ledger row, and nothing else is there."""
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{mvm.database}"
    by_status = dict(_pg(dsn, "SELECT status, count(*) FROM ledger_entries GROUP BY status"))
    rows = _pg(dsn, "SELECT message_id, count(*) FROM ledger_entries GROUP BY message_id")
    per_reply = {r[0]: int(r[1]) for r in rows}
    assistant = _pg(dsn, "SELECT count(*) FROM messages WHERE role = 'assistant'")[0][0]
    expected = set(replies)
    result = {
        "completed_replies": len(replies),
        "ledger_rows": sum(per_reply.values()),
        "rows_by_status": {str(k): int(v) for k, v in by_status.items()},
        "assistant_messages": int(assistant),
        "replies_without_row": len(expected - per_reply.keys()),
        "replies_with_several_rows": sum(1 for m in expected if per_reply.get(m, 0) > 1),
        "rows_of_no_reply": sum(n for m, n in per_reply.items() if m not in expected),
    }
    result["consistent"] = (
        len(expected) == len(replies) == result["ledger_rows"] == result["assistant_messages"]
        and result["replies_without_row"] == result["replies_with_several_rows"] == 0
    )
    return result


def _versions(admin_dsn: str, redis_url: str) -> dict[str, str]:
    import redis

    names = ("mvm-chat", "litestar", "uvicorn", "sqlalchemy", "asyncpg", "httpx", "websockets")
    found = {name: version(name) for name in names}
    found["postgres"] = str(_pg(admin_dsn, "SHOW server_version")[0][0])
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    found["redis"] = str(client.info("server")["redis_version"])
    client.close()
    return found | {"python": sys.version.split()[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    started, load_before = time.time(), load_average()
    processes: list[Process] = []
    mvm: MvmChat | None = None
    with tempfile.TemporaryDirectory(prefix="mvm-bench-soak-") as folder:
        work = Path(folder)
        try:
            upstream, upstream_url = start_upstream(work, 16, 5.0)
            processes.append(upstream)
            mvm = MvmChat(work, gateway_catalog(upstream_url), args.postgres, args.redis).start()
            assert mvm.proc is not None
            pid = int(memory_kib(mvm.proc.popen.pid).get("pid", mvm.proc.popen.pid))
            check = check_once(Target("mvm_chat", mvm.url, mvm.key, "auto", "bench-paced"))
            peers = {-mvm.port: "clients", urlsplit(upstream_url).port or 80: "upstream"}
            peers[urlsplit(args.postgres).port or 5432] = "postgres"
            peers[urlsplit(args.redis).port or 6379] = "redis"
            sampler = Sampler(pid, args.postgres, mvm.database, peers, args.sample_s)
            before = sampler.sample("idle before load")
            log(f"mvm_chat (pid {pid}) on {mvm.url}; {args.clients} clients, {args.warmup:.0f} s"
                f" warm-up, {args.duration:.0f} s measured")  # fmt: skip
            driven = _drive(args, mvm, sampler, work / "clients.json")
            clients, quiet = driven["clients"], driven["quiet"]
            replies = [check["mvm"]["message_id"], *clients.pop("message_ids")]
            time.sleep(1.0)  # nothing is in flight now; let any background write land
            ledger = _ledger(mvm, args.postgres, replies)
            logged = server_log(mvm.work / "mvm_chat.log")
        except BaseException:
            for proc in processes + ([mvm.proc] if mvm and mvm.proc else []):
                if proc.popen.poll() is not None:
                    log(f"{proc.name} exited; its log ends:\n{proc.tail()}")
            raise
        finally:
            if mvm is not None:
                mvm.stop()
            for proc in processes:
                proc.stop()
    soak_s = clients["ended"] - clients["soak_started"]
    report: dict[str, Any] = {
        "benchmark": "soak",
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.time() - started, 1),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine() | {"load_average_before": load_before},
        "source": source_state(),
        "versions": _versions(args.postgres, args.redis),
        "settings": vars(args) | {"out": str(args.out), "measured_s": round(soak_s, 1)},
        "summary": summarise(clients, soak_s),
        **figures(sampler.samples, clients, args.warmup, before, quiet),
        "ledger": ledger,
        "server_log": logged,
        "failure_examples": clients["examples"],
        "samples": sampler.samples,
    }
    report["targets"] = targets(report)
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # a TERM (timeout, kill) unwinds like Ctrl-C, so the database and Redis keys are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    print(text(report))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{report['date']}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
    sys.exit(0 if all(t["met"] for t in report["targets"]) else 1)


if __name__ == "__main__":
    main()
