"""An empty knowledge base is not searched on every turn; documents count soon after."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import delete

from mvm_chat.kb import ingest
from mvm_chat.kb.search import EmptinessMemo
from mvm_chat.store.db import Database
from mvm_chat.store.models import KbDocument


async def test_emptiness_is_remembered_then_checked_again(kb_db: Database, kb_docs: Path) -> None:
    memo = EmptinessMemo(recheck_s=0.3)
    assert await memo.is_empty(kb_db)
    await ingest(kb_db, [kb_docs / "billing.md"], None)
    assert await memo.is_empty(kb_db), "believed empty until the recheck"
    await asyncio.sleep(0.35)
    assert not await memo.is_empty(kb_db), "the added document counts after the recheck"
    async with kb_db.transaction() as session:
        await session.execute(delete(KbDocument))
    assert not await memo.is_empty(kb_db), "once it had documents, the search itself decides"
