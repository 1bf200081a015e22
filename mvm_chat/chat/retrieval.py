"""Step 4 of a turn: passages from every retriever, best first, into the prompt."""

from __future__ import annotations

from mvm_chat.chat.components import Components
from mvm_chat.engines.base import ChatMessage
from mvm_chat.settings import RetrievalSettings
from mvm_chat.types import Passage, Turn


async def retrieve(
    components: Components, turn: Turn, settings: RetrievalSettings
) -> list[Passage]:
    """The best ``settings.limit`` passages of all retrievers together."""
    retrievers = components.of("retriever")
    if not retrievers or settings.limit <= 0:
        return []
    results = await components.call_all(retrievers, "retrieve", turn, settings.limit)
    passages = [
        p
        for found in results
        if isinstance(found, list)
        for p in found
        if isinstance(p, Passage) and p.score >= settings.min_score
    ]
    passages.sort(key=lambda p: p.score, reverse=True)
    return passages[: settings.limit]


def with_passages(prompt: list[ChatMessage], passages: list[Passage]) -> list[ChatMessage]:
    """The prompt with the passages, and their sources, in a system message before the user's."""
    if not passages:
        return prompt
    listed = "\n\n".join(f"[{i}] (source: {p.source})\n{p.text}" for i, p in enumerate(passages, 1))
    context = ChatMessage(
        "system",
        "Answer using these passages when they are relevant, and name the source you used.\n\n"
        + listed,
    )
    return [*prompt[:-1], context, prompt[-1]]
