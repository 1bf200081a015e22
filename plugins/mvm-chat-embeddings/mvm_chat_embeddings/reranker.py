"""The ``embeddings_rerank`` retriever: full-text candidates, reordered by meaning."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from mvm_chat import Passage, Turn

from mvm_chat_embeddings.encoder import Encoder

if TYPE_CHECKING:
    from mvm_chat.store.db import Database

Search = Callable[[str, int, str | None], Awaitable[list[Passage]]]
"""``search(text, limit, tenant_id)``: full-text candidates, best first."""


def rerank(
    encoder: Encoder, question: str, passages: Sequence[Passage], limit: int
) -> list[Passage]:
    """The ``limit`` passages most similar to ``question``, the cosine similarity as score.

    Ties keep the candidates' order. Blocking.
    """
    if not passages or limit <= 0:
        return []
    similarities = encoder.similarities(question, [p.text for p in passages])
    order = sorted(range(len(passages)), key=lambda i: (-float(similarities[i]), i))
    return [
        Passage(passages[i].text, passages[i].source, float(similarities[i])) for i in order[:limit]
    ]


class EmbeddingReranker:
    """Asks the knowledge base's full-text search for ``candidates`` passages, returns the best
    ``limit`` of them by cosine similarity between their embedding and the question's."""

    name = "embeddings_rerank"

    def __init__(self, search: Search, encoder: Encoder, candidates: int) -> None:
        self.search = search
        self.encoder = encoder
        self.candidates = candidates

    @classmethod
    def over_kb(cls, db: Database, encoder: Encoder, candidates: int) -> EmbeddingReranker:
        """A reranker over the knowledge base in ``db`` (:func:`mvm_chat.kb.search.search`)."""
        from mvm_chat.kb.search import search

        return cls(partial(search, db), encoder, candidates)

    async def retrieve(self, turn: Turn, limit: int) -> list[Passage]:
        """The best ``limit`` passages the turn's tenant may see, best first."""
        if limit <= 0:
            return []
        tenant_id = turn.metadata.get("tenant_id")
        found = await self.search(
            turn.text,
            max(limit, self.candidates),
            tenant_id if isinstance(tenant_id, str) else None,
        )
        if not found:
            return []
        return await asyncio.to_thread(rerank, self.encoder, turn.text, found, limit)
