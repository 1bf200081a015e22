"""The ``embeddings_rerank`` retriever: full-text candidates reordered by cosine similarity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from mvm_chat import Passage, Turn
from mvm_chat.cache import create_cache
from mvm_chat.chat.components import register_from
from mvm_chat.chat.services import Services
from mvm_chat.kb import ingest
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import load_settings
from mvm_chat.store.db import Database, upgrade

from mvm_chat_embeddings.encoder import Encoder
from mvm_chat_embeddings.reranker import EmbeddingReranker

QUESTION = "How long until I get my money back after a refund?"
RELEVANT = "Refunds reach your card within five business days once we approve them."
CANDIDATES = [
    Passage("Change my name, my email address and my password in my profile.", "profile", 9.0),
    Passage("Our offices are closed on public holidays; get in touch by email.", "offices", 8.0),
    Passage(RELEVANT, "refunds", 1.0),
    Passage("Cards are delivered by post within a week of ordering.", "cards", 0.5),
]


class FakeSearch:
    """Returns fixed candidates and records how it was called."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self.calls: list[tuple[str, int, str | None]] = []

    async def __call__(self, text: str, limit: int, tenant_id: str | None) -> list[Passage]:
        self.calls.append((text, limit, tenant_id))
        return self.passages[:limit]


def turn(text: str, tenant_id: str | None = "t-1") -> Turn:
    return Turn(text, "c1", "acme", metadata={"tenant_id": tenant_id})


async def test_candidates_are_reordered_by_similarity(encoder: Encoder) -> None:
    search = FakeSearch(CANDIDATES)
    reranker = EmbeddingReranker(search, encoder, candidates=20)
    passages = await reranker.retrieve(turn(QUESTION), 3)
    assert search.calls == [(QUESTION, 20, "t-1")]
    assert len(passages) == 3
    assert passages[0].text == RELEVANT and passages[0].source == "refunds"
    vectors = encoder.encode([QUESTION] + [p.text for p in passages])
    np.testing.assert_allclose([p.score for p in passages], vectors[1:] @ vectors[0], atol=1e-5)
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


async def test_limit_and_empty_results(encoder: Encoder) -> None:
    search = FakeSearch(CANDIDATES)
    reranker = EmbeddingReranker(search, encoder, candidates=2)
    assert await reranker.retrieve(turn(QUESTION, tenant_id=None), 0) == []
    assert search.calls == []
    await reranker.retrieve(turn(QUESTION, tenant_id=None), 5)
    assert search.calls == [(QUESTION, 5, None)]  # never fewer candidates than asked for
    nothing = EmbeddingReranker(FakeSearch([]), encoder, candidates=20)
    assert await nothing.retrieve(turn(QUESTION), 3) == []


@pytest.fixture
def kb_url(tmp_path: Path) -> str:
    """A migrated SQLite database (the migration runs its own event loop, so not in ``kb``)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def kb(kb_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The database, holding one document per candidate passage."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for passage in CANDIDATES:
        (docs / f"{passage.source}.txt").write_text(passage.text + "\n")
    db = Database(kb_url)
    await ingest(db, [docs], None)
    yield db
    await db.dispose()


async def test_registered_over_the_knowledge_base(kb: Database, tmp_path: Path) -> None:
    plugins = load_plugins(only=["embeddings"])
    settings = load_settings(None, environ={})
    services = Services(
        settings=settings, db=kb, cache=create_cache(""), engines={}, plugins=plugins
    )
    assert register_from(plugins, "retriever", settings, services, only="embeddings") == [], (
        "the reranker is opt-in"
    )
    on = {"rerank": True}
    [component] = register_from(plugins, "retriever", settings, services, "embeddings", on)
    assert component.name == "embeddings_rerank"
    passages = await component.obj.retrieve(turn(QUESTION), 2)
    assert Path(passages[0].source).name == "refunds.txt"
    assert len(passages) == 2 and all(-1 <= p.score <= 1 for p in passages)

    assert register_from(plugins, "retriever", settings, None, "embeddings", on) == []
