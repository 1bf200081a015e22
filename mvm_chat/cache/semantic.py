"""The semantic response cache: an answer served again for a question that means the same.

Entries live in the cache backend (Redis, or in-process) as one append-only list per
*namespace*: the tenant, the conversation state before the question (system prompt and
history) and the sampling settings. Each process mirrors the lists it reads and fetches only
what was appended since (one ``LRANGE`` per lookup), then compares the question's embedding
with every entry's (cosine similarity, unit vectors). An entry carries the model and tier
that answered it; the caller decides which entries may serve (never a lower tier than the
turn needs).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from mvm_chat.cache.backends import CacheBackend
from mvm_chat.engines.base import ChatMessage

Vector = NDArray[np.float32]
PAGE = 500
"""Entries fetched per read of a namespace's list."""


class Embedder(Protocol):
    """What ``register_embedders`` registers: ``name`` and a blocking ``embed``."""

    name: str

    def embed(self, texts: Sequence[str], /) -> Sequence[Sequence[float]]:
        """One embedding per text (any length; they are normalised here)."""
        ...


@dataclass(frozen=True, slots=True)
class SemanticEntry:
    """A stored answer and what produced it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    tier: str
    created: float
    """Unix time it was stored."""


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry: SemanticEntry
    similarity: float


def namespace(
    tenant_id: str,
    context: Sequence[ChatMessage],
    max_tokens: int | None,
    temperature: float | None,
    embedder: str = "",
) -> str:
    """The key of the entries that may answer a question asked after ``context`` (embedded
    by ``embedder``: another embedder's vectors are not comparable)."""
    payload = json.dumps(
        [tenant_id, [[m.role, m.content] for m in context], max_tokens, temperature, embedder],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sem:" + hashlib.sha256(payload.encode()).hexdigest()


def encode_entry(vector: Vector, entry: SemanticEntry) -> bytes:
    """A 4-byte header length, the entry as JSON, then the float32 vector."""
    head = json.dumps(
        [
            entry.text,
            entry.prompt_tokens,
            entry.completion_tokens,
            entry.model,
            entry.tier,
            entry.created,
        ],
        ensure_ascii=False,
    ).encode()
    return struct.pack("<I", len(head)) + head + vector.astype("<f4").tobytes()


def decode_entry(raw: bytes) -> tuple[Vector, SemanticEntry] | None:
    """The vector and entry of :func:`encode_entry`'s bytes; None if they are malformed."""
    try:
        (size,) = struct.unpack_from("<I", raw)
        text, prompt, completion, model, tier, created = json.loads(raw[4 : 4 + size])
        vector = np.frombuffer(raw[4 + size :], dtype="<f4").astype(np.float32)
        entry = SemanticEntry(
            str(text), int(prompt), int(completion), str(model), str(tier), float(created)
        )
    except Exception:  # whatever another writer left there: not an entry
        return None
    return (vector, entry) if vector.size else None


@dataclass(slots=True)
class _Mirror:
    """What this process has read of one namespace's list."""

    read: int = 0
    """Items of the backend's list read so far (malformed ones included)."""
    loaded: float = field(default_factory=time.time)
    entries: list[SemanticEntry] = field(default_factory=list)
    matrix: Vector | None = None
    """One row per entry, in rows ``[0, len(entries))``; it grows by doubling."""

    def add(self, vector: Vector, entry: SemanticEntry) -> None:
        n = len(self.entries)
        if self.matrix is None or self.matrix.shape[1] != vector.shape[0]:
            if n:
                return  # another embedding model's vector: not comparable
            self.matrix = np.empty((16, vector.shape[0]), dtype=np.float32)
        elif n == self.matrix.shape[0]:
            grown = np.empty((2 * n, self.matrix.shape[1]), dtype=np.float32)
            grown[:n] = self.matrix
            self.matrix = grown
        self.matrix[n] = vector
        self.entries.append(entry)


class SemanticCache:
    """Lookups and stores of the semantic cache over a :class:`CacheBackend`."""

    def __init__(
        self,
        backend: CacheBackend,
        embedder: Embedder,
        threshold: float,
        ttl_s: int,
        max_entries: int = 10_000,
        max_namespaces: int = 1_000,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._mirrors: OrderedDict[str, _Mirror] = OrderedDict()
        self._max_namespaces = max_namespaces

    async def embed(self, text: str) -> Vector:
        """The unit-length embedding of ``text`` (computed in a worker thread)."""
        rows = await asyncio.to_thread(self.embedder.embed, [text])
        vector = np.asarray(rows[0], dtype=np.float32).ravel()
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    async def lookup(
        self, key: str, vector: Vector, eligible: Callable[[SemanticEntry], bool]
    ) -> SemanticHit | None:
        """The most similar eligible entry at or above the threshold; None when there is
        none or the backend is unreachable."""
        mirror = await self._refresh(key)
        if mirror is None or mirror.matrix is None or mirror.matrix.shape[1] != vector.shape[0]:
            return None  # nothing stored, or by another embedding model
        scores = mirror.matrix[: len(mirror.entries)] @ vector
        oldest = time.time() - self.ttl_s
        above = np.flatnonzero(scores >= self.threshold)
        for index in above[np.argsort(scores[above])[::-1]]:
            similarity = float(scores[index])
            entry = mirror.entries[index]
            if entry.created >= oldest and eligible(entry):
                return SemanticHit(entry, similarity)
        return None

    async def store(self, key: str, vector: Vector, entry: SemanticEntry) -> None:
        """Append an entry, unless the namespace held ``max_entries`` at this process's last
        lookup in it."""
        mirror = self._mirrors.get(key)
        if mirror is not None and mirror.read >= self.max_entries:
            return
        await self.backend.append(key, encode_entry(vector, entry), self.ttl_s)

    async def _refresh(self, key: str) -> _Mirror | None:
        mirror = self._mirrors.get(key)
        if mirror is None or mirror.loaded < time.time() - self.ttl_s:
            # new, or old enough that the backend's list may have expired and begun again
            mirror = _Mirror()
        while True:  # in pages: a full namespace is megabytes, and each read has a timeout
            start = mirror.read
            page = await self.backend.read_from(key, start, PAGE)
            if page is None:
                return None
            # a concurrent lookup of the same namespace may have added some of these already
            fresh = page[mirror.read - start :]
            mirror.read += len(fresh)
            for raw in fresh:
                decoded = decode_entry(raw)
                if decoded is not None:
                    mirror.add(*decoded)
            if len(page) < PAGE:
                break
        if not mirror.read:
            return mirror  # nothing stored: not worth a place among the copies kept
        self._mirrors[key] = mirror
        self._mirrors.move_to_end(key)
        while len(self._mirrors) > self._max_namespaces:
            self._mirrors.popitem(last=False)
        return mirror
