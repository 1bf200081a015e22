"""Full-text search over the knowledge base: SQLite FTS5 (bm25) or PostgreSQL (ts_rank).

The user's text never reaches a query as syntax: it is reduced to word tokens, which are
quoted (FTS5) or joined with ``or`` (PostgreSQL ``websearch_to_tsquery``, which never raises)
and always passed as bound parameters. A chunk is visible to a tenant when its document
belongs to that tenant or is shared (``tenant_id`` NULL).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sqlalchemy import text as sql

from mvm_chat.store.db import Database
from mvm_chat.types import Passage

MAX_TERMS = 32
MAX_TERM_CHARS = 64
_WORD = re.compile(r"[^\W_]+")  # letters and digits; "_" separates, as in FTS5

SQLITE_QUERY = sql(
    """
    SELECT c.text, c.heading, d.source, -bm25(kb_chunks_fts) AS score
    FROM kb_chunks_fts
    JOIN kb_chunks AS c ON c.id = kb_chunks_fts.rowid
    JOIN kb_documents AS d ON d.id = c.document_id
    WHERE kb_chunks_fts MATCH :query
      AND (d.tenant_id = :tenant_id OR d.tenant_id IS NULL)
    ORDER BY bm25(kb_chunks_fts), c.id
    LIMIT :limit
    """
)

# The tsvector expression must stay the one of the GIN index in migration 0002.
POSTGRES_QUERY = sql(
    """
    SELECT c.text, c.heading, d.source,
           ts_rank(to_tsvector('english', c.heading || ' ' || c.text), q.query) AS score
    FROM websearch_to_tsquery('english', :query) AS q(query),
         kb_chunks AS c
    JOIN kb_documents AS d ON d.id = c.document_id
    WHERE to_tsvector('english', c.heading || ' ' || c.text) @@ q.query
      AND (d.tenant_id = :tenant_id OR d.tenant_id IS NULL)
    ORDER BY score DESC, c.id
    LIMIT :limit
    """
)


ANY_DOCUMENT = sql("SELECT EXISTS (SELECT 1 FROM kb_documents)")

EMPTY_RECHECK_S = 2.0
"""How long an empty knowledge base is believed empty before the next check."""


class EmptinessMemo:
    """Remembers for ``recheck_s`` seconds that the knowledge base has no document, so that a
    service without one does not run a search query on every turn (documents added with
    ``mvm-chat kb add`` count from at most that long later)."""

    def __init__(
        self, recheck_s: float = EMPTY_RECHECK_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.recheck_s = recheck_s
        self._clock = clock
        self._empty_until = 0.0
        self._had_documents = False

    async def is_empty(self, db: Database) -> bool:
        if self._had_documents:
            return False  # once it has had documents, searching is the check
        if self._clock() < self._empty_until:
            return True
        async with db.connect() as conn:
            empty = not (await conn.execute(ANY_DOCUMENT)).scalar()
        self._had_documents = not empty
        self._empty_until = self._clock() + self.recheck_s
        return empty


def terms(text: str) -> list[str]:
    """The distinct word tokens of ``text``, lower-cased, at most ``MAX_TERMS`` of them."""
    found: list[str] = []
    for match in _WORD.finditer(text.lower()):
        term = match.group()[:MAX_TERM_CHARS]
        if term not in found:
            found.append(term)
            if len(found) == MAX_TERMS:
                break
    return found


def fts5_query(words: list[str]) -> str:
    """An FTS5 query matching any of ``words``, each quoted as a string (no operators)."""
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in words)


def tsquery_text(words: list[str]) -> str:
    """``websearch_to_tsquery`` input matching any of ``words``."""
    return " or ".join(word for word in words if word != "or")


def source_of(path: str, heading: str) -> str:
    """``path#heading``, or the path alone for a chunk without a heading."""
    return f"{path}#{heading}" if heading else path


async def search(db: Database, text: str, limit: int, tenant_id: str | None) -> list[Passage]:
    """The ``limit`` chunks that best match ``text`` and are visible to ``tenant_id``.

    Scores are higher for better matches (and never negative); an empty query finds nothing.
    """
    words = terms(text)
    if limit <= 0 or not words:
        return []
    if db.engine.dialect.name == "sqlite":
        statement, query = SQLITE_QUERY, fts5_query(words)
    else:
        statement, query = POSTGRES_QUERY, tsquery_text(words)
        if not query:
            return []
    params = {"query": query, "tenant_id": tenant_id, "limit": limit}
    async with db.connect() as conn:
        rows = (await conn.execute(statement, params)).all()
    return [
        Passage(text=row.text, source=source_of(row.source, row.heading), score=float(row.score))
        for row in rows
    ]
