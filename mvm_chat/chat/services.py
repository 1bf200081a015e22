"""Everything a turn needs, built once per app instance."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog

from mvm_chat.cache import CacheBackend, create_cache
from mvm_chat.cache.pubsub import LocalPubSub, PubSub, create_pubsub
from mvm_chat.cache.semantic import SemanticCache
from mvm_chat.chat.breakers import Breakers
from mvm_chat.chat.components import Components
from mvm_chat.chat.router import Load
from mvm_chat.engines.base import Engine
from mvm_chat.errors import ConfigError
from mvm_chat.ledger.budgets import Budgets
from mvm_chat.metrics import Metrics
from mvm_chat.plugins import PluginSet, engine_factories
from mvm_chat.settings import Settings
from mvm_chat.store.db import Database
from mvm_chat.store.key_cache import KeyCache

log = structlog.get_logger(__name__)


def build_engines(settings: Settings, pm: pluggy.PluginManager) -> dict[str, Engine]:
    """One engine per catalog entry, from the registered factories."""
    factories = engine_factories(pm)
    engines: dict[str, Engine] = {}
    for i, model in enumerate(settings.models):
        factory = factories.get(model.engine)
        if factory is None:
            known = ", ".join(sorted(factories)) or "none"
            raise ConfigError(
                f"models[{i}].engine", f"unknown engine {model.engine!r} (known: {known})"
            )
        try:
            engines[model.name] = factory(model)
        except ConfigError as exc:
            field = exc.key.rsplit(".", 1)[-1]
            raise ConfigError(f"models[{i}].{field}", exc.problem) from None
    return engines


def semantic_cache(services: Services, components: Components) -> SemanticCache | None:
    """The semantic cache over the embedder ``chat.semantic_cache`` names, if one is named."""
    chat = services.settings.chat
    if not chat.semantic_cache:
        return None
    embedders = {c.name: c.obj for c in components.of("embedder")}
    if chat.semantic_cache not in embedders:
        known = ", ".join(sorted(embedders)) or "none; install a plugin such as mvm-chat-embeddings"
        raise ConfigError(
            "chat.semantic_cache",
            f"no embedder named {chat.semantic_cache!r} (registered: {known})",
        )
    return SemanticCache(
        services.cache,
        embedders[chat.semantic_cache],
        chat.semantic_threshold,
        chat.cache_ttl_s,
        chat.semantic_max_entries,
    )


@dataclass(slots=True)
class Services:
    """Settings, storage, cache, engines, plugins and metrics of one app instance."""

    settings: Settings
    db: Database
    cache: CacheBackend
    engines: dict[str, Engine]
    plugins: PluginSet
    metrics: Metrics = field(default_factory=Metrics)
    components: Components | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    pubsub: PubSub = field(default_factory=LocalPubSub)
    breakers: Breakers = field(default_factory=Breakers)
    latency_s: dict[str, float] = field(default_factory=dict)
    """Per model, a moving average of a call's duration (for the predicted wait)."""
    budgets: Budgets | None = None
    """Tenants' monthly budgets (None: budgets are not enforced)."""
    semantic: SemanticCache | None = None
    """The semantic response cache (None: ``chat.semantic_cache`` is off)."""
    keys: KeyCache = field(init=False)
    """Principals of the keys seen, kept while key changes are heard (Postgres)."""

    def __post_init__(self) -> None:
        self.keys = KeyCache(self.db)

    def observe_latency(self, model: str, seconds: float) -> None:
        previous = self.latency_s.get(model)
        self.latency_s[model] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def load(self) -> Load:
        """Breakers, queue depths and predicted waits, as the router reads them."""
        return Load(
            available=lambda m: self.breakers.available(m.name),
            queue_depth=lambda m: self.engines[m.name].queue_depth,
            predicted_wait_s=lambda m: (
                self.engines[m.name].queue_depth * self.latency_s.get(m.name, 0.0)
            ),
        )

    @classmethod
    def build(cls, settings: Settings, plugins: PluginSet) -> Services:
        """Engines, storage and cache, then every plugin component (which may use them)."""
        engines = build_engines(settings, plugins.pm)
        services = cls(
            settings=settings,
            db=Database(settings.database.url),
            cache=create_cache(
                settings.redis.url, settings.redis.key_prefix, settings.redis.timeout_s
            ),
            engines=engines,
            plugins=plugins,
            pubsub=create_pubsub(
                settings.redis.url, settings.redis.key_prefix, settings.redis.timeout_s
            ),
            breakers=Breakers(
                settings.routing.breaker_failures, settings.routing.breaker_cooldown_s
            ),
        )
        services.budgets = Budgets(services.db, settings.redis)
        services.components = Components.build(plugins, settings, services, services.metrics)
        services.semantic = semantic_cache(services, services.components)
        return services

    async def start(self) -> None:
        await self.keys.start()
        for name, engine in self.engines.items():
            log.info("engine.starting", model=name, engine=engine.kind)
            await engine.start()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` outside the request (it outlives a client that went away)."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("background.failed", error=type(error).__name__, detail=str(error)[:300])

    async def close(self) -> None:
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        for engine in self.engines.values():
            await engine.close()
        await self.cache.close()
        await self.pubsub.close()
        if self.budgets is not None:
            await self.budgets.close()
        await self.keys.close()
        await self.db.dispose()
