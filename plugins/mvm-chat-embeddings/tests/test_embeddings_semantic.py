"""The embedder ``embeddings`` behind mvm_chat's semantic cache, registered through the hook."""

from __future__ import annotations

import time
from typing import cast

from mvm_chat.cache.backends import MemoryCache
from mvm_chat.cache.semantic import Embedder, SemanticCache, SemanticEntry, namespace
from mvm_chat.chat.components import Components
from mvm_chat.metrics import Metrics
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import Settings


def embedder_of_the_plugin() -> Embedder:
    plugins = load_plugins(only=["embeddings"])
    components = Components.build(plugins, Settings(), None, Metrics())
    [embedder] = [c for c in components.of("embedder") if c.plugin == "embeddings"]
    assert embedder.name == "embeddings"
    return cast(Embedder, embedder.obj)


async def test_a_paraphrase_hits_and_another_question_does_not() -> None:
    cache = SemanticCache(MemoryCache(), embedder_of_the_plugin(), 0.92, ttl_s=60)
    key = namespace("acme", [], None, None)
    asked = await cache.embed("How do I reset my passcode?")
    entry = SemanticEntry("Open Settings, then Security.", 9, 6, "small", "local", time.time())
    await cache.store(key, asked, entry)

    paraphrase = await cache.lookup(key, await cache.embed("how can I reset my passcode"), bool)
    assert paraphrase is not None and paraphrase.entry == entry
    assert paraphrase.similarity >= 0.92
    other = await cache.lookup(key, await cache.embed("What is the exchange rate today?"), bool)
    assert other is None
