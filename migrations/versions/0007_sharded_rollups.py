"""ledger_rollups gets a ``shard`` key column, so that concurrent turns do not queue on one row

The rollup is derived data: the table is recreated with the new primary key and refilled from
the ledger (as ``mvm-chat ledger rebuild-rollups`` does), every key in shard 0.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:00:00.000000
"""

import itertools
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = ["day", "tenant_id", "model", "engine", "tier", "intent"]
SUMS = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_nusd",
    "baseline_cost_nusd",
    "escalated",
    "errors",
    "cache_hits",
    *(f"lat_{i:02d}" for i in range(25)),
]


def _create(sharded: bool) -> None:
    shard = [sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False)]
    op.create_table(
        "ledger_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("intent", sa.String(length=200), nullable=False),
        *(shard if sharded else []),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*DIMENSIONS, *(["shard"] if sharded else [])),
    )


def _refill() -> None:
    bounds = [round(25 * 2400 ** (i / 23)) for i in range(24)]
    conditions = [f"< {bounds[0]}"]
    conditions += [f">= {lo} AND latency_ms < {hi}" for lo, hi in itertools.pairwise(bounds)]
    conditions.append(f">= {bounds[-1]}")
    lat = ",\n".join(f"SUM(CASE WHEN latency_ms {c} THEN 1 ELSE 0 END)" for c in conditions)
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(timezone('UTC', created_at) AS DATE)"
        nanos = "CAST({} * 1000000000 AS BIGINT)"
    else:
        day = "date(created_at)"
        nanos = "CAST(round({} * 1000000000) AS INTEGER)"
    # Static SQL built from constants above (no input).
    op.execute(
        f"""
        INSERT INTO ledger_rollups ({", ".join(DIMENSIONS)}, {", ".join(SUMS)})
        SELECT {day}, tenant_id, model, engine, tier, COALESCE(intent, ''),
            COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
            SUM({nanos.format("cost_usd")}), SUM({nanos.format("baseline_cost_usd")}),
            SUM(CASE WHEN status = 'escalated' THEN 1 ELSE 0 END),
            SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
            SUM(CASE WHEN cache IN ('hit', 'semantic') THEN 1 ELSE 0 END),
            {lat}
        FROM ledger_entries
        GROUP BY {day}, tenant_id, model, engine, tier, COALESCE(intent, '')
        """  # noqa: S608
    )


def upgrade() -> None:
    op.drop_table("ledger_rollups")
    _create(sharded=True)
    _refill()


def downgrade() -> None:
    op.drop_table("ledger_rollups")
    _create(sharded=False)
    _refill()
