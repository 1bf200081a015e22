"""The semantic response cache in a real server (SQLite, Redis) with two tiers of SGLang
stand-in models and an embedder plugin: paraphrases are served from the cache, never from a
tier below what the turn needs, per tenant, and ``Cache-Control: no-cache`` bypasses it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from mvm_chat.cache import semantic as semantic_module
from mvm_chat.cache.backends import MemoryCache, RedisCache
from mvm_chat.cache.semantic import SemanticCache, SemanticEntry, namespace
from mvm_chat.engines.base import ChatMessage
from tests.integration.conftest import seen, standin_model
from tests.support import REDIS_UP_TIMEOUT_S, Server, query_db, redis_toml, until

# A real embedder, small and deterministic: hashed bag of words (paraphrases that share most
# words are close; other questions are not).
EMBEDDER_PLUGIN = """
import hashlib
import re

from mvm_chat import hookimpl


class Words:
    name = "words"

    def embed(self, texts):
        vectors = []
        for text in texts:
            vector = [0.0] * 256
            for word in re.findall(r"[a-z]+", text.lower()):
                vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 256] += 1.0
            vectors.append(vector)
        return vectors


@hookimpl
def register_embedders(register):
    register(Words())
"""


@pytest.fixture(scope="module")
def server(
    standin: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("semantic")
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "words_embedder.py").write_text(EMBEDDER_PLUGIN)
    config = (
        redis_toml(redis_url, f"{redis_prefix}semantic:")
        + f"""
[chat]
semantic_cache = "words"
semantic_threshold = 0.85

[[tiers]]
name = "local"

[[tiers]]
name = "api"
{standin_model(standin, "small", "local")}
{standin_model(standin, "big", "api")}
[routing.intent_floors]
refund_request = "api"

[plugins.keyword_intents.rules]
refund_request = ["\\\\brefund"]
"""
    )
    server = Server(folder / "server", config, env={"MVM_CHAT_PLUGINS_DIR": str(plugins)})
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.key("acme")


def ask(server: Server, key: str, text: str, model: str = "auto", **headers: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def calls(standin: str) -> int:
    return len(seen(standin, "/v1/chat/completions")) + len(seen(standin, "/generate"))


class Entries:
    """The semantic cache's entries in Redis (lists under the server's prefix)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.prefix = prefix

    def count(self) -> int:
        keys = self.client.scan_iter(match=self.prefix + "*", _type="list")
        return sum(int(self.client.llen(key)) for key in keys)


@pytest.fixture(scope="module")
def entries(redis_url: str, redis_prefix: str) -> Iterator[Entries]:
    found = Entries(redis_url, f"{redis_prefix}semantic:")
    yield found
    found.client.close()


def ask_and_store(
    server: Server, key: str, entries: Entries, text: str, **kwargs: str
) -> dict[str, Any]:
    """``ask``, then wait until its answer is in the cache (it is stored in the background,
    after the reply)."""
    before = entries.count()
    reply = ask(server, key, text, **kwargs)
    until(lambda: entries.count() > before, "the answer was never stored")
    return reply


def test_a_paraphrase_is_answered_from_the_cache_for_nothing(
    server: Server, key: str, standin: str, script: Any, entries: Entries
) -> None:
    first = ask_and_store(server, key, entries, "How do I reset my online banking password")
    assert (first["mvm"]["cache"], first["mvm"]["model"]) == ("miss", "small")
    before = calls(standin)
    again = ask(server, key, "how do I reset my online banking password please?")
    assert calls(standin) == before, "the model was not called"
    mvm = again["mvm"]
    assert (mvm["cache"], mvm["model"], mvm["tier"]) == ("semantic", "small", "local")
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert float(mvm["cost_usd"]) == 0
    rows = query_db(
        f"sqlite+aiosqlite:///{server.workdir / 'var' / 'mvm_chat.db'}",
        "SELECT cache, status, cost_usd FROM ledger_entries WHERE message_id = :m",
        m=mvm["message_id"],
    )
    assert [(r[0], r[1], float(r[2])) for r in rows] == [("semantic", "ok", 0.0)]

    other = ask(server, key, "What time does the branch open on Sunday")
    assert other["mvm"]["cache"] == "miss", "a different question is not a hit"
    same = ask(server, key, "How do I reset my online banking password")
    assert same["mvm"]["cache"] == "hit", "word for word, the exact cache answers first"


def test_an_escalated_question_is_answered_again_from_the_tier_it_needed(
    server: Server, key: str, standin: str, script: Any, entries: Entries
) -> None:
    first = ask_and_store(server, key, entries, "I would like a refund for my broken card reader")
    assert (first["mvm"]["cache"], first["mvm"]["tier"]) == ("miss", "api")
    again = ask(server, key, "I would like a refund for my broken card reader, thanks")
    assert (again["mvm"]["cache"], again["mvm"]["tier"]) == ("semantic", "api")

    # Asked of the big model by name, then by "auto" (routed to local): the api answer serves,
    # and the move up to its tier is recorded.
    ask_and_store(
        server, key, entries, "What is the daily limit on card payments abroad", model="big"
    )
    routed_low = ask(server, key, "what is the daily limit on card payments abroad?")
    mvm = routed_low["mvm"]
    assert (mvm["cache"], mvm["model"], mvm["tier"]) == ("semantic", "big", "api")
    assert [(e["from"], e["to"]) for e in mvm["escalations"]] == [("local", "api")]


def test_never_from_a_tier_below_what_the_turn_needs(
    server: Server, key: str, standin: str, script: Any, entries: Entries
) -> None:
    # Answered by the local model by name ...
    low = ask_and_store(
        server, key, entries, "Can I get a refund on the monthly account fee", model="small"
    )
    assert (low["mvm"]["cache"], low["mvm"]["tier"]) == ("miss", "local")
    # ... then the same question under auto is floored to api: the local answer may not serve.
    routed = ask(server, key, "can I get a refund on the monthly account fee?")
    assert (routed["mvm"]["cache"], routed["mvm"]["tier"]) == ("miss", "api")
    # A request naming a model gets only that model's answers.
    ask_and_store(
        server, key, entries, "How long does a bank transfer to Germany take", model="small"
    )
    named = ask(server, key, "how long does a bank transfer to Germany take?", model="big")
    assert (named["mvm"]["cache"], named["mvm"]["model"]) == ("miss", "big")


def test_per_tenant_and_bypassed_by_no_cache(
    server: Server, key: str, standin: str, script: Any, entries: Entries
) -> None:
    ask_and_store(server, key, entries, "Why was my contactless payment declined at the shop")
    paraphrase = "why was my contactless payment declined at the shop today"
    assert ask(server, server.key("globex"), paraphrase)["mvm"]["cache"] == "miss"
    bypass = ask(server, key, paraphrase, **{"Cache-Control": "no-cache"})
    assert bypass["mvm"]["cache"] == "bypass"
    assert ask(server, key, paraphrase)["mvm"]["cache"] == "semantic"


async def test_entries_are_shared_through_redis(redis_url: str, redis_prefix: str) -> None:
    """Two processes' caches over one Redis: what one stores, the other finds."""

    class Fixed:
        name = "fixed"

        def embed(self, texts: Any) -> list[list[float]]:
            return [[1.0, 0.0, 0.0] if "card" in t else [0.0, 1.0, 0.0] for t in texts]

    prefix = f"{redis_prefix}shared:"
    backends = [RedisCache(redis_url, prefix, REDIS_UP_TIMEOUT_S) for _ in range(2)]
    one, two = (SemanticCache(b, Fixed(), 0.9, ttl_s=60, max_entries=2) for b in backends)
    key = namespace("acme", [ChatMessage("system", "Be brief.")], None, None)
    card, other = await one.embed("my card"), await one.embed("the weather")
    assert await two.lookup(key, card, lambda e: True) is None
    entry = SemanticEntry("Your card arrives in 3 days.", 5, 7, "small", "local", time.time())
    await one.store(key, card, entry)
    hit = await two.lookup(key, card, lambda e: True)
    assert hit is not None and hit.entry == entry and hit.similarity == pytest.approx(1.0)
    assert await two.lookup(key, other, lambda e: True) is None, "below the threshold"
    assert await two.lookup(key, card, lambda e: e.tier == "api") is None, "not eligible"
    old = SemanticEntry("stale", 1, 1, "small", "local", time.time() - 120)
    await two.store(key, np.array([0.0, 0.0, 1.0], dtype=np.float32), old)
    assert await one.lookup(key, np.array([0.0, 0.0, 1.0], np.float32), lambda e: True) is None
    assert await two.lookup(key, card, lambda e: True) is not None
    await two.store(key, card, entry)  # the namespace is full (2 entries): not stored
    assert len(await two.backend.read_from(key, 0, 10) or []) == 2
    for backend in backends:
        await backend.close()


def test_a_misnamed_embedder_stops_start_up(tmp_path: Path) -> None:
    from tests.support import mvm

    (tmp_path / "mvm_chat.toml").write_text('[chat]\nsemantic_cache = "nope"\n')
    result = mvm(tmp_path, "serve", "--port", "1", check=False)
    assert result.returncode == 2
    assert "chat.semantic_cache" in result.stderr and "'nope'" in result.stderr


class SlowMemory(MemoryCache):
    """The in-process backend with a pause in each read, so lookups overlap."""

    async def read_from(self, key: str, start: int, count: int) -> list[bytes] | None:
        await asyncio.sleep(0.01)
        return await super().read_from(key, start, count)


async def test_overlapping_lookups_neither_double_nor_skip_entries() -> None:
    backend = SlowMemory()
    cache = SemanticCache(backend, _Axes(), 0.9, ttl_s=60, max_entries=100)
    key = namespace("acme", [], None, None, "axes")
    for i in range(3):
        entry = SemanticEntry(f"answer {i}", 1, 1, "small", "local", time.time())
        await cache.store(key, _axis(i), entry)
        if i == 0:  # this process's copy of the namespace now holds the first entry
            assert await cache.lookup(key, _axis(0), bool) is not None
    found = await asyncio.gather(*(cache.lookup(key, _axis(0), bool) for _ in range(2)))
    assert all(hit is not None and hit.entry.text == "answer 0" for hit in found)
    late = SemanticEntry("answer 3", 1, 1, "small", "local", time.time())
    await cache.store(key, _axis(3), late)
    hit = await cache.lookup(key, _axis(3), bool)
    assert hit is not None and hit.entry.text == "answer 3", "the entry after them is seen"
    await backend.append(key, b"\xff\xff\xff\x7fnot an entry", 60)  # a foreign item
    assert (await cache.lookup(key, _axis(1), bool)) is not None, "and is skipped"


class _Axes:
    name = "axes"

    def embed(self, texts: Any) -> list[list[float]]:
        return [[1.0 if i == int(t) else 0.0 for i in range(8)] for t in texts]


def _axis(i: int) -> Any:
    return np.eye(8, dtype=np.float32)[i]


async def test_a_namespace_is_read_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic_module, "PAGE", 2)
    cache = SemanticCache(MemoryCache(), _Axes(), 0.9, ttl_s=60)
    key = namespace("acme", [], None, None, "axes")
    for i in range(5):
        await cache.store(key, _axis(i), SemanticEntry(f"a{i}", 1, 1, "s", "local", time.time()))
    hit = await cache.lookup(key, _axis(4), bool)
    assert hit is not None and hit.entry.text == "a4"
