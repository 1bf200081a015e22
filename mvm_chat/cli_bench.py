"""``mvm-chat bench seed-ledger`` (synthetic traffic), ``mvm-chat bench gateway``, ``soak``
and ``local-tier`` (the harnesses under ``bench/`` of a source checkout) and ``mvm-chat ledger
rebuild-rollups``.

The shared command-line helpers are imported from ``mvm_chat.cli`` when a command runs (that
module adds these groups to ``cli`` as it finishes loading).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import insert, text

from mvm_chat.ledger.synthetic import COLUMNS, TENANT_NAMES, Traffic, catalog
from mvm_chat.store.db import Database
from mvm_chat.store.keys import get_or_create_tenant
from mvm_chat.store.models import LedgerEntry
from mvm_chat.store.rollups import rebuild

if TYPE_CHECKING:
    from mvm_chat.cli import Context

BATCH = 20_000


def _tenant_names(count: int) -> list[str]:
    names = list(TENANT_NAMES[:count])
    return names + [f"tenant-{i + 1:03d}" for i in range(len(names), count)]


async def _insert_batch(db: Database, batch: list[tuple[Any, ...]]) -> None:
    async with db.transaction() as session:
        if db.engine.dialect.name == "postgresql":
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                "ledger_entries", records=batch, columns=COLUMNS
            )
        else:
            await session.execute(
                insert(LedgerEntry),
                [dict(zip(COLUMNS, row, strict=True)) for row in batch],
            )


def _batches(rows: Iterable[tuple[Any, ...]]) -> Iterable[list[tuple[Any, ...]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, BATCH)):
        yield batch


async def rebuild_rollups(db: Database) -> int:
    """Recompute the whole rollup from the ledger (and refresh the planner's statistics)."""
    async with db.transaction() as session:
        written = await rebuild(session)
    if db.engine.dialect.name == "postgresql":
        async with db.engine.connect() as conn:
            await conn.execute(text("ANALYZE ledger_entries"))
            await conn.execute(text("ANALYZE ledger_rollups"))
            await conn.commit()
    return written


@click.group()
def bench() -> None:
    """Benchmark helpers."""


@bench.command("seed-ledger")
@click.option("--rows", type=click.IntRange(min=1), required=True, help="Ledger rows to add.")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--tenants", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=5, show_default=True, help="Random seed.")
@click.pass_obj
def seed_ledger(ctx: Context, rows: int, days: int, tenants: int, seed: int) -> None:
    """Fill the ledger with realistic synthetic traffic over the last DAYS days, then rebuild
    the rollup. Tenants are created when missing; the configured models are used when they
    span two tiers or more, else a built-in four-tier catalog."""
    from mvm_chat.cli import run
    from mvm_chat.cli_kb import _open, _ready

    settings = ctx.settings
    _ready(settings)

    async def seed_all() -> tuple[float, float, int]:
        db = await _open(settings)
        try:
            async with db.transaction() as session:
                ids = [
                    (await get_or_create_tenant(session, name)).id
                    for name in _tenant_names(tenants)
                ]
            traffic = Traffic(catalog(settings), ids, days, datetime.now(UTC), seed)
            started = time.perf_counter()
            with click.progressbar(length=rows, label="Seeding ledger", file=sys.stderr) as bar:
                for batch in _batches(traffic.rows(rows)):
                    await _insert_batch(db, batch)
                    bar.update(len(batch))
            seeded = time.perf_counter() - started
            written = await rebuild_rollups(db)
            return seeded, time.perf_counter() - started - seeded, written
        finally:
            await db.dispose()

    seeded, rolled, written = run(seed_all)
    click.echo(
        f"seeded {rows} ledger rows over {days} days for {tenants} tenants in {seeded:.1f}s "
        f"({rows / max(seeded, 1e-9):,.0f} rows/s); rollup rebuilt ({written} rows) "
        f"in {rolled:.1f}s"
    )


def _bench_script(name: str) -> Path:
    """``bench/NAME`` of the source checkout this package runs from, or of the current folder;
    the harnesses are not part of the installed package."""
    for folder in (Path(__file__).resolve().parents[1], Path.cwd()):
        script = folder / "bench" / name
        if script.is_file():
            return script
    click.echo(
        f"mvm-chat: bench/{name} is not here: the benchmark harnesses live in a source "
        "checkout of mvm_chat (git clone, then run this command inside it), not in the "
        "installed package",
        err=True,
    )
    sys.exit(2)


_PASS_ON = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@bench.command("gateway", context_settings=_PASS_ON)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def gateway(args: tuple[str, ...]) -> None:
    """mvm_chat against LiteLLM's proxy and the direct upstream: throughput, added latency,
    streaming and memory. Runs ``bench/gateway.py`` of a source checkout with ARGS (see
    ``--help``)."""
    script = _bench_script("gateway.py")
    sys.exit(subprocess.call([sys.executable, str(script), *args]))  # noqa: S603


@bench.command("soak", context_settings=_PASS_ON)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def soak(args: tuple[str, ...]) -> None:
    """Issue 8's soak: mixed REST, streaming and WebSocket traffic at 50 clients for 10 minutes;
    errors, memory growth, open descriptors, ledger rows. Runs ``bench/soak.py`` of a source
    checkout with ARGS (see ``--help``)."""
    script = _bench_script("soak.py")
    sys.exit(subprocess.call([sys.executable, str(script), *args]))  # noqa: S603


@bench.command("local-tier", context_settings=_PASS_ON)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def local_tier(args: tuple[str, ...]) -> None:
    """The local tier's tokens/s against raw llama-cpp-python. Runs ``bench/local_tier.py``
    of a source checkout with ARGS (see ``--help``)."""
    script = _bench_script("local_tier.py")
    sys.exit(subprocess.call([sys.executable, str(script), *args]))  # noqa: S603


@click.group("ledger")
def ledger_group() -> None:
    """The cost ledger."""


@ledger_group.command("rebuild-rollups")
@click.pass_obj
def rebuild_rollups_command(ctx: Context) -> None:
    """Recompute the ledger rollup from ``ledger_entries`` (after a manual edit or import)."""
    from mvm_chat.cli import run
    from mvm_chat.cli_kb import _open, _ready

    settings = ctx.settings
    _ready(settings)

    async def go() -> int:
        db = await _open(settings)
        try:
            return await rebuild_rollups(db)
        finally:
            await db.dispose()

    click.echo(f"rollup rebuilt: {run(go)} rows")
