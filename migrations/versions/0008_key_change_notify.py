"""On Postgres, every change to ``api_keys`` or ``tenants`` sends a notification

Server processes keep the principals of keys they have seen (``store/key_cache.py``) and
empty that cache when a notification on ``mvm_api_keys`` arrives: triggers rather than the
application's own ``NOTIFY``, so that a key revoked by any means (the CLI, plain SQL) is
forgotten. A notification is sent when the changing transaction commits. SQLite has no
notifications; servers on SQLite keep no key cache.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("api_keys", "tenants")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION mvm_notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('mvm_api_keys', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_changed AFTER UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION mvm_notify_key_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_changed ON {table}")
    op.execute("DROP FUNCTION mvm_notify_key_change()")
