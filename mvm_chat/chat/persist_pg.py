"""The first turn of a conversation written to Postgres in one statement (one round trip).

The conversation, its two messages, the turn's ledger rows and their rollup increments go in
as data-modifying CTEs of the rollup's upsert: a single statement, so it commits or fails as
a whole without a BEGIN / COMMIT around it (the foreign keys are checked at its end, when the
conversation row is there). Statements are built once per shape (number of ledger and rollup
rows), so SQLAlchemy compiles each once and asyncpg keeps it prepared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import JSON, Table, bindparam, insert
from sqlalchemy.engine import Dialect

from mvm_chat.store.db import Database, json_text
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
    """A statement compiled once: its SQL and how to take its positional parameters from the
    rows."""

    sql: str
    runs: tuple[tuple[int, int, Callable[[Mapping[str, Any]], tuple[Any, ...]]], ...]
    """The parameters in order, as runs from one row each: its group, its row, and a getter
    of the run's columns (``itemgetter``: one C call per row rather than a lookup per
    parameter)."""
    json_at: tuple[int, ...]
    """Positions of JSON columns' parameters (passed serialised, by the engine's serialiser)."""


def _source(name: str) -> tuple[int, int, str]:
    prefix, column = name.split("_", 1)
    return _GROUPS[prefix[0]], int(prefix[1:] or 0), column


def _getter(columns: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    if len(columns) == 1:  # itemgetter of one key returns the value, not a 1-tuple
        [column] = columns
        return lambda row: (row[column],)
    return itemgetter(*columns)


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
        names = compiled.positiontup or []
        runs = tuple(
            (group, row, _getter([column for _, _, column in run]))
            for (group, row), run in groupby(map(_source, names), key=lambda s: s[:2])
        )
        json_at = tuple(
            i for i, name in enumerate(names) if isinstance(compiled.binds[name].type, JSON)
        )
        found = _Compiled(str(compiled), runs, json_at)
        _STATEMENTS[ledger_rows, rollup_rows] = found
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
    values: list[Any] = []
    for group, row, take in compiled.runs:
        values += take(groups[group][row])
    for i in compiled.json_at:
        values[i] = json_text(values[i])
    async with db.driver() as driver:
        await driver.execute(compiled.sql, *values)
