"""ledger rollups and the admin views' ledger indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:00:00.000000
"""

import itertools
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


def upgrade() -> None:
    op.create_table(
        "ledger_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("intent", sa.String(length=200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("day", "tenant_id", "model", "engine", "tier", "intent"),
    )
    op.create_index("ix_ledger_created_id", "ledger_entries", ["created_at", "id"])
    op.create_index(
        "ix_ledger_tenant_created_id", "ledger_entries", ["tenant_id", "created_at", "id"]
    )
    op.drop_index("ix_ledger_tenant_created", table_name="ledger_entries")
    # Fill the rollup from the rows already in the ledger.
    lat = ",\n".join(
        f"SUM(CASE WHEN latency_ms {cond} THEN 1 ELSE 0 END)" for cond in _bucket_conditions()
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        day = "CAST(timezone('UTC', created_at) AS DATE)"
        nanos = "CAST({} * 1000000000 AS BIGINT)"
    else:
        day = "date(created_at)"
        nanos = "CAST(round({} * 1000000000) AS INTEGER)"
    # Static SQL built from constants above (no input).
    sql = f"""
        INSERT INTO ledger_rollups (day, tenant_id, model, engine, tier, intent, {", ".join(SUMS)})
        SELECT {day}, tenant_id, model, engine, tier, COALESCE(intent, ''),
            COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
            SUM({nanos.format("cost_usd")}), SUM({nanos.format("baseline_cost_usd")}),
            SUM(CASE WHEN status = 'escalated' THEN 1 ELSE 0 END),
            SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
            SUM(CASE WHEN cache = 'hit' THEN 1 ELSE 0 END),
            {lat}
        FROM ledger_entries
        GROUP BY {day}, tenant_id, model, engine, tier, COALESCE(intent, '')
    """  # noqa: S608
    op.execute(sql)


def _bucket_conditions() -> list[str]:
    bounds = [round(25 * 2400 ** (i / 23)) for i in range(24)]
    conditions = [f"< {bounds[0]}"]
    conditions += [f">= {lo} AND latency_ms < {hi}" for lo, hi in itertools.pairwise(bounds)]
    return [*conditions, f">= {bounds[-1]}"]


def downgrade() -> None:
    op.create_index("ix_ledger_tenant_created", "ledger_entries", ["tenant_id", "created_at"])
    op.drop_index("ix_ledger_tenant_created_id", table_name="ledger_entries")
    op.drop_index("ix_ledger_created_id", table_name="ledger_entries")
    op.drop_table("ledger_rollups")
