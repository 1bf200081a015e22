"""The admin cost views at scale: a fresh Postgres database with N seeded ledger rows (default
1,000,000 over 30 days), a real ``mvm-chat serve``, and timed HTTP requests.

    .venv/bin/python bench/admin_costs.py [--rows N] [--repeat K] [--admin-url postgresql://...]
                                          [--database URL]   # reuse a seeded database

Measures the p50 of ``summary?group_by=day`` and ``group_by=intent`` over the whole range, a
100-row ``ledger`` page at the first, middle and last cursor depth, and the CSV export of every
row (rows/s, and the server's peak RSS). Prints a table and writes
``bench/results/admin-costs-DATE.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intents import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import MODEL_TOML, Server, mvm  # noqa: E402

TARGETS_MS = {"summary": 300.0, "ledger": 50.0}
TARGET_CSV_ROWS_S = 50_000


async def _pg(admin_url: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _cursor_at(database: str, depth: int) -> str | None:
    """The cursor a client holds after reading ``depth`` rows (None at the start)."""
    if depth == 0:
        return None
    row = asyncio.run(
        _pg(
            database,
            "SELECT created_at, id FROM ledger_entries ORDER BY created_at DESC, id DESC "
            "OFFSET $1 LIMIT 1",
            depth - 1,
        )
    )[0]
    raw = json.dumps({"t": row["created_at"].astimezone(dt.UTC).isoformat(), "i": row["id"]})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _timed(client: httpx.Client, path: str, params: dict[str, Any], repeat: int) -> list[float]:
    client.get(path, params=params).raise_for_status()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        reply = client.get(path, params=params)
        times.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
    return times


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default=None, help="reuse this seeded database")
    parser.add_argument("--keep", action="store_true", help="keep the database it creates")
    args = parser.parse_args()

    created = None
    if args.database:
        database = args.database
    else:
        created = f"mvm_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg(args.admin_url, f'CREATE DATABASE "{created}"'))
        database = (
            args.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            + f"/{created}"
        )
    workdir = Path(tempfile.mkdtemp(prefix="bench-costs-"))
    env = {"MVM_CHAT_DATABASE_URL": database}
    result: dict[str, Any] = {"rows": args.rows, "days": args.days, "repeat": args.repeat}
    try:
        server = Server(workdir, MODEL_TOML, env=env)
        if created:
            mvm(workdir, "db", "upgrade", env=server.env)
            started = time.perf_counter()
            seeded = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "mvm_chat", "bench", "seed-ledger", "--rows",
                 str(args.rows), "--days", str(args.days)],
                cwd=workdir, env={**server.env}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            result["seed_s"] = round(time.perf_counter() - started, 1)
            result["seed_output"] = seeded.stdout.strip()
            print(seeded.stdout.strip(), f"(database {database})")
        plain = database.replace("postgresql+asyncpg://", "postgresql://")
        total = asyncio.run(_pg(plain, "SELECT count(*) AS n FROM ledger_entries"))[0]["n"]
        first_day = asyncio.run(_pg(plain, "SELECT min(created_at) AS t FROM ledger_entries"))[0][
            "t"
        ]
        result["ledger_rows"] = total
        server.start()
        key = server.key("bench-admin", "admin")
        headers = {"Authorization": f"Bearer {key}"}
        whole = {
            "from": first_day.date().isoformat(),
            "to": dt.datetime.now(dt.UTC).date().isoformat(),
        }
        measured: list[tuple[str, float, float | None]] = []
        with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
            for group_by in ("day", "intent"):
                times = _timed(
                    client, "/admin/costs/summary", {**whole, "group_by": group_by}, args.repeat
                )
                p50 = statistics.median(times)
                result[f"summary_{group_by}_p50_ms"] = round(p50, 1)
                measured.append(
                    (f"summary group_by={group_by} (whole range)", p50, TARGETS_MS["summary"])
                )
            for label, depth in (
                ("first", 0),
                ("middle", total // 2),
                ("last", max(total - 100, 0)),
            ):
                cursor = _cursor_at(plain, depth)
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                times = _timed(client, "/admin/costs/ledger", params, args.repeat)
                p50 = statistics.median(times)
                result[f"ledger_{label}_p50_ms"] = round(p50, 1)
                measured.append(
                    (f"ledger page, 100 rows, {label} (row {depth:,})", p50, TARGETS_MS["ledger"])
                )
            started = time.perf_counter()
            lines = 0
            with client.stream("GET", "/admin/costs/ledger.csv") as reply:
                reply.raise_for_status()
                for chunk in reply.iter_bytes():
                    lines += chunk.count(b"\n")
            seconds = time.perf_counter() - started
        rows_s = (lines - 1) / seconds
        result.update(
            csv_rows=lines - 1,
            csv_s=round(seconds, 2),
            csv_rows_per_s=round(rows_s),
            server_peak_rss_mib=_peak_rss_mib(server.proc.pid) if server.proc else None,
        )
        server.stop()
    finally:
        if created and not args.keep:
            asyncio.run(_pg(args.admin_url, f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)'))
    result["machine"] = machine()
    result["date"] = dt.date.today().isoformat()

    print(f"\n{'measure':<48} {'p50':>10} {'target':>10}")
    for label, value, target in measured:
        verdict = "ok" if target is None or value <= target else "MISSED"
        print(f"{label:<48} {value:>8.1f}ms {target:>8.0f}ms  {verdict}")
    verdict = "ok" if rows_s >= TARGET_CSV_ROWS_S else "MISSED"
    print(f"{'CSV export, all rows':<48} {rows_s:>8,.0f}/s {TARGET_CSV_ROWS_S:>8,}/s  {verdict}")
    print(f"server peak RSS: {result['server_peak_rss_mib']} MiB; {result['machine']}")
    out = ROOT / "bench" / "results" / f"admin-costs-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
