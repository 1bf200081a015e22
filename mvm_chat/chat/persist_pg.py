"""The first turn of a conversation written to Postgres in one statement (one round trip).

The conversation, its two messages, the turn's ledger rows and their rollup increments go in
as data-modifying CTEs of the rollup's upsert: a single statement, so it commits or fails as
a whole without a BEGIN / COMMIT around it (the foreign keys are checked at its end, when the
conversation row is there). Statements are built once per shape (number of ledger and rollup
rows), so SQLAlchemy compiles each once and asyncpg keeps it prepared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import JSON, Table, bindparam, insert
from sqlalchemy.engine import Dialect

from mvm_chat.store.db import Database
from mvm_chat.store.models import Conversation, LedgerEntry, Message
from mvm_chat.store.rollups import rollup_upsert

_CONVERSATIONS = cast(Table, Conversation.__table__)
_MESSAGES = cast(Table, Message.__table__)
_LEDGER = cast(Table, LedgerEntry.__table__)
CONVERSATION_COLUMNS = tuple(c.key for c in _CONVERSATIONS.columns)
MESSAGE_COLUMNS = tuple(c.key for c in _MESSAGES.columns)
LEDGER_COLUMNS = tuple(c.key for c in _LEDGER.columns if c.key != "id")
MAX_ROWS = 4
"""Turns with more ledger rows than this take the statement-by-statement path."""


_GROUPS = {"c": 0, "m": 1, "l": 2, "r": 3}
"""Bound parameters are named ``{group}{row}_{column}``: the conversation (``c_``, one row),
the messages, the ledger rows and the rollup rows, in the order write_new_conversation takes
them."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled once: its SQL and where each positional parameter comes from."""

    sql: str
    sources: tuple[tuple[int, int, str, bool], ...]
    """Per parameter: its group, row and column, and whether it is a JSON column's (passed
    serialised, as SQLAlchemy's JSON type does)."""


def _source(name: str, is_json: bool) -> tuple[int, int, str, bool]:
    prefix, column = name.split("_", 1)
    return _GROUPS[prefix[0]], int(prefix[1:] or 0), column, is_json


_STATEMENTS: dict[tuple[int, int], _Compiled] = {}


def _binds(table: Table, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
    # typed: only the first row of a multi-row VALUES would take the columns' types
    return {name: bindparam(f"{prefix}_{name}", type_=table.c[name].type) for name in columns}


def _statement(dialect: Dialect, ledger_rows: int, rollup_rows: int) -> _Compiled:
    # SQLAlchemy does not cache statements with multi-row VALUES: compile it here, once.
    found = _STATEMENTS.get((ledger_rows, rollup_rows))
    if found is None:
        conversation = insert(_CONVERSATIONS).values(
            _binds(_CONVERSATIONS, "c", CONVERSATION_COLUMNS)
        )
        messages = insert(_MESSAGES).values(
            [_binds(_MESSAGES, "m0", MESSAGE_COLUMNS), _binds(_MESSAGES, "m1", MESSAGE_COLUMNS)]
        )
        ledger = insert(_LEDGER).values(
            [_binds(_LEDGER, f"l{i}", LEDGER_COLUMNS) for i in range(ledger_rows)]
        )
        statement = rollup_upsert("postgresql", rollup_rows).add_cte(
            conversation.cte("new_conversation"),
            messages.cte("new_messages"),
            ledger.cte("new_ledger"),
        )
        compiled = statement.compile(dialect=dialect)
        sources = tuple(
            _source(name, isinstance(compiled.binds[name].type, JSON))
            for name in compiled.positiontup or ()
        )
        found = _STATEMENTS[ledger_rows, rollup_rows] = _Compiled(str(compiled), sources)
    return found


def fits(ledger_rows: int, rollup_rows: int) -> bool:
    """Whether a turn of that many rows can be written by :func:`write_new_conversation`."""
    return 1 <= ledger_rows <= MAX_ROWS and 1 <= rollup_rows <= ledger_rows


async def write_new_conversation(
    db: Database,
    conversation: dict[str, Any],
    messages: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
    rollups: list[dict[str, Any]],
) -> None:
    """Insert a new conversation with its two messages, ledger rows and rollup increments,
    in one statement (through asyncpg itself, outside any transaction)."""
    compiled = _statement(db.engine.dialect, len(ledger), len(rollups))
    groups = ((conversation,), messages, ledger, rollups)
    values = [
        json.dumps(groups[group][row][column]) if is_json else groups[group][row][column]
        for group, row, column, is_json in compiled.sources
    ]
    async with db.driver() as driver:
        await driver.execute(compiled.sql, *values)
