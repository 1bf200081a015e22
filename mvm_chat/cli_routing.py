"""``mvm-chat eval routing``: replay traffic through classification and routing."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mvm_chat.cli import Context


def read_texts(path: Path, limit: int | None) -> list[str]:
    """The ``text`` column of a CSV (the first column when there is no header named text)."""
    from mvm_chat.cli import fail

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read: {exc}")
    if not rows:
        fail(f"{path}: the file is empty")
    header = [h.strip().lower() for h in rows[0]]
    column = header.index("text") if "text" in header else 0
    body = rows[1:] if "text" in header else rows
    texts = [row[column].strip() for row in body if len(row) > column and row[column].strip()]
    return texts[:limit] if limit else texts


def print_report(report: dict[str, Any]) -> None:
    click.echo(
        f"messages   {report['messages']} ({'generated' if report['generated'] else 'routed only'})"
    )
    click.echo(f"local      {report['local_share'] * 100:.1f}% answered on the default tier")
    click.echo("tiers")
    for tier, row in report["tiers"].items():
        click.echo(f"  {tier:<12} {row['count']:>6}  {row['share'] * 100:5.1f}%")
    click.echo("escalation reasons")
    for reason, count in report["escalation_reasons"].items():
        click.echo(f"  {count:>6}  {reason}")
    click.echo(f"cost       ${report['cost_usd']}")
    click.echo(f"baseline   ${report['baseline_cost_usd']} (everything on the baseline model)")
    click.echo(f"savings    ${report['savings_usd']}")


@click.command("routing")
@click.option(
    "--traffic",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of messages (a 'text' column).",
)
@click.option("--generate", is_flag=True, help="Also generate (slow): real answers, checks, costs.")
@click.option("--limit", type=int, default=None, help="Only the first N messages.")
@click.option(
    "--completion-tokens",
    type=int,
    default=60,
    show_default=True,
    help="Assumed answer length for projected costs without --generate.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.pass_obj
def routing_command(
    ctx: Context,
    traffic: Path,
    generate: bool,
    limit: int | None,
    completion_tokens: int,
    as_json: bool,
) -> None:
    """Replay messages through classification and routing; report the tier mix, the
    escalation reasons and the cost against the baseline model."""
    from mvm_chat.chat.replay import replay_generation, replay_routing
    from mvm_chat.chat.services import Services
    from mvm_chat.cli import database_errors

    texts = read_texts(traffic, limit)
    settings = ctx.settings
    loaded = ctx.plugins()
    stderr = sys.stderr
    with (
        database_errors(),
        click.progressbar(length=len(texts), label="replaying", file=stderr) as bar,
    ):
        if generate:
            report = asyncio.run(replay_generation(settings, loaded, texts, lambda: bar.update(1)))
        else:
            services = Services.build(settings, loaded)
            report = asyncio.run(
                replay_routing(services, texts, completion_tokens, lambda: bar.update(1))
            )
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_report(data)
