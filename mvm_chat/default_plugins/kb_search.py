"""Registers the built-in full-text retriever ``kb`` over the knowledge base.

Configured by ``[plugins.kb_search]``: ``enabled = false`` turns it off (it is on by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mvm_chat import hookimpl
from mvm_chat.errors import ConfigError
from mvm_chat.store.db import Database
from mvm_chat.types import Passage, Turn

if TYPE_CHECKING:
    from mvm_chat.chat.components import Registrar

KNOWN_KEYS = frozenset({"enabled"})


class KbRetriever:
    """Passages from the knowledge base that the turn's tenant may see (its own and shared)."""

    name = "kb"

    def __init__(self, db: Database) -> None:
        from mvm_chat.kb.search import EmptinessMemo

        self.db = db
        self.memo = EmptinessMemo()

    async def retrieve(self, turn: Turn, limit: int) -> list[Passage]:
        """The best ``limit`` chunks for ``turn.text``, best first."""
        from mvm_chat.kb.search import search

        if await self.memo.is_empty(self.db):
            return []
        tenant_id = turn.metadata.get("tenant_id")
        return await search(
            self.db, turn.text, limit, tenant_id if isinstance(tenant_id, str) else None
        )


def _enabled(config: dict[str, Any]) -> bool:
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"plugins.kb_search.{unknown[0]}", "unknown key (known: enabled)")
    enabled = config.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("plugins.kb_search.enabled", "must be true or false")
    return enabled


@hookimpl(trylast=True)
def register_retrievers(register: Registrar) -> None:
    """Register ``kb`` when enabled and a database is at hand (inside a running app)."""
    if not _enabled(register.config) or register.services is None:
        return
    register(KbRetriever(register.services.db))
