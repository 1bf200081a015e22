"""knowledge base: documents, chunks and their full-text index

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000

SQLite gets an FTS5 table over ``kb_chunks`` (external content, kept in sync by triggers);
PostgreSQL gets a GIN index over the chunks' ``to_tsvector('english', heading || ' ' || text)``,
the very expression that ``mvm_chat.kb.search`` queries.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_FTS = (
    # porter: stemmed like PostgreSQL's 'english' configuration ("refunds" finds "refund").
    "CREATE VIRTUAL TABLE kb_chunks_fts USING fts5("
    "text, heading, content='kb_chunks', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER kb_chunks_fts_insert AFTER INSERT ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading); "
    "END",
    "CREATE TRIGGER kb_chunks_fts_delete AFTER DELETE ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, text, heading) "
    "VALUES ('delete', old.id, old.text, old.heading); "
    "END",
    "CREATE TRIGGER kb_chunks_fts_update AFTER UPDATE ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, text, heading) "
    "VALUES ('delete', old.id, old.text, old.heading); "
    "INSERT INTO kb_chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading); "
    "END",
)
SQLITE_FTS_DROP = (
    "DROP TRIGGER IF EXISTS kb_chunks_fts_update",
    "DROP TRIGGER IF EXISTS kb_chunks_fts_delete",
    "DROP TRIGGER IF EXISTS kb_chunks_fts_insert",
    "DROP TABLE IF EXISTS kb_chunks_fts",
)
POSTGRES_FTS = (
    "CREATE INDEX ix_kb_chunks_fts ON kb_chunks "
    "USING gin (to_tsvector('english', heading || ' ' || text))",
)
POSTGRES_FTS_DROP = ("DROP INDEX IF EXISTS ix_kb_chunks_fts",)


def upgrade() -> None:
    op.create_table(
        "kb_documents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "source", name="uq_kb_documents_tenant_source"),
    )
    with op.batch_alter_table("kb_documents", schema=None) as batch_op:
        batch_op.create_index(
            "uq_kb_documents_shared_source",
            ["source"],
            unique=True,
            sqlite_where=sa.text("tenant_id IS NULL"),
            postgresql_where=sa.text("tenant_id IS NULL"),
        )

    op.create_table(
        "kb_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("heading", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["kb_documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("kb_chunks", schema=None) as batch_op:
        batch_op.create_index("ix_kb_chunks_document_seq", ["document_id", "seq"], unique=True)

    dialect = op.get_bind().dialect.name
    for statement in SQLITE_FTS if dialect == "sqlite" else POSTGRES_FTS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_FTS_DROP if dialect == "sqlite" else POSTGRES_FTS_DROP:
        op.execute(statement)

    with op.batch_alter_table("kb_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_kb_chunks_document_seq")
    op.drop_table("kb_chunks")

    with op.batch_alter_table("kb_documents", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_kb_documents_shared_source",
            sqlite_where=sa.text("tenant_id IS NULL"),
            postgresql_where=sa.text("tenant_id IS NULL"),
        )
    op.drop_table("kb_documents")
