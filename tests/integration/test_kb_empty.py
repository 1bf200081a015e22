"""An empty knowledge base is not searched on every turn; documents count soon after."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete

from mvm_chat.kb import ingest
from mvm_chat.kb.search import EmptinessMemo
from mvm_chat.store.db import Database
from mvm_chat.store.models import KbDocument


class Clock:
    """A clock the test moves by hand, so that a slow machine cannot outrun the recheck."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_emptiness_is_remembered_then_checked_again(kb_db: Database, kb_docs: Path) -> None:
    clock = Clock()
    memo = EmptinessMemo(recheck_s=30.0, clock=clock)
    assert await memo.is_empty(kb_db)
    await ingest(kb_db, [kb_docs / "billing.md"], None)
    clock.now += 29.9
    assert await memo.is_empty(kb_db), "believed empty until the recheck"
    clock.now += 0.2
    assert not await memo.is_empty(kb_db), "the added document counts after the recheck"
    async with kb_db.transaction() as session:
        await session.execute(delete(KbDocument))
    clock.now += 60.0
    assert not await memo.is_empty(kb_db), "once it had documents, the search itself decides"
