"""The semantic cache in a turn: a lookup before the first call, the final answer stored.

An entry serves a turn only when its model is still in the tenant's catalog at the same tier,
and, for ``auto``, only when that tier is at or above the tier the turn was routed to (a
question that once had to escalate is answered again from where it ended up, never from a
tier below what it needs now); a request naming a model gets only that model's answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from mvm_chat.cache import responses
from mvm_chat.cache.semantic import SemanticEntry, SemanticHit, Vector, namespace
from mvm_chat.chat import router
from mvm_chat.chat.generation import Attempt, request_for
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import PreparedTurn
from mvm_chat.engines.base import ChatMessage, Usage
from mvm_chat.settings import ModelSettings, Settings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class SemanticProbe:
    """What was found before the turn's first call: the exact cache's answer, or else the
    question's namespace and embedding and the entry found for it, if any."""

    exact: responses.CachedAnswer | None = None
    key: str = ""
    vector: Vector | None = None
    hit: SemanticHit | None = None

    @property
    def served(self) -> responses.Served | None:
        """The answer the first call is to give, if either cache has one."""
        if self.exact is not None:
            return responses.Served("hit", self.exact)
        if self.hit is None:
            return None
        entry = self.hit.entry
        answer = responses.CachedAnswer(
            entry.text, Usage(entry.prompt_tokens, entry.completion_tokens)
        )
        return responses.Served("semantic", answer)


async def probe(
    services: Services,
    prepared: PreparedTurn,
    settings: Settings,
    route: router.Route,
    prompt: list[ChatMessage],
) -> SemanticProbe | None:
    """The exact cache's answer to ``prompt`` (what the routed model would get), else the
    semantic cache's lookup of the question; None when the semantic cache is off or bypassed."""
    cache, request, asked = services.semantic, prepared.request, prepared.prompt
    if cache is None or not request.use_cache or not asked or asked[-1].role != "user":
        return None
    if any(message.role != "system" for message in asked[:-1]):
        return None  # a follow-up: after a history of its own, a neighbour is all but never found
    generation = request_for(route.model, prompt, request.max_tokens, request.temperature)
    exact = responses.response_key(request.principal.tenant_id, route.model.name, generation)
    raw = await services.cache.get(exact)
    answer = responses.decode(raw) if raw is not None else None
    if answer is not None:
        return SemanticProbe(exact=answer)  # no embedding needed
    key = namespace(
        request.principal.tenant_id,
        asked[:-1],
        request.max_tokens,
        request.temperature,
        cache.embedder.name,
    )
    try:
        vector = await cache.embed(asked[-1].content)
    except Exception as exc:  # a broken embedder costs the cache, never the turn
        services.metrics.series(services.metrics.plugin_errors, cache.embedder.name).inc()
        log.error("semantic_cache.embed_failed", error=f"{type(exc).__name__}: {exc}")
        return None
    ranks = {name: i for i, name in enumerate(settings.tier_names)}
    floor = ranks.get(route.tier, 0)
    auto = request.model == router.AUTO

    def eligible(entry: SemanticEntry) -> bool:
        model = settings.model(entry.model)
        if model is None or model.tier != entry.tier or entry.tier not in ranks:
            return False
        return ranks[entry.tier] >= floor if auto else entry.model == route.model.name

    try:
        found = await cache.lookup(key, vector, eligible)
    except Exception as exc:  # nor does a stored entry that cannot be read
        log.error("semantic_cache.lookup_failed", error=f"{type(exc).__name__}: {exc}")
        found = None
    return SemanticProbe(key=key, vector=vector, hit=found)


def served_route(settings: Settings, found: SemanticHit) -> router.Route:
    """The route of a semantic hit: the model that once answered."""
    model = settings.model(found.entry.model)
    assert model is not None  # checked by eligible()
    return router.Route(model, f"semantic cache (similarity {found.similarity:.3f})")


def remember(
    services: Services, found: SemanticProbe | None, model: ModelSettings, attempt: Attempt
) -> None:
    """Store a turn's final answer for later paraphrases (in the background)."""
    finished = attempt.finished
    if (
        services.semantic is None
        or found is None
        or found.vector is None
        or attempt.cache != "miss"
        or finished is None
        or finished.finish_reason not in ("stop", "length")  # as the exact cache stores
        or not attempt.text
    ):
        return
    entry = SemanticEntry(
        attempt.text,
        finished.usage.prompt_tokens,
        finished.usage.completion_tokens,
        model.name,
        model.tier,
        time.time(),
    )
    services.spawn(services.semantic.store(found.key, found.vector, entry))
