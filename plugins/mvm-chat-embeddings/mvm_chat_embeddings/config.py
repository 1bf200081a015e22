"""The plugin's settings: the ``[plugins.embeddings]`` table, checked.

```toml
[plugins.embeddings]
train = "data/intents.csv"   # labelled CSV (text, label or category); no classifier without it
threshold = 0.35             # below this probability the label is out_of_scope
min_similarity = 0.45        # ... and below this cosine similarity to every training message
cache_dir = "var/models"     # where trained models are kept
rerank = false               # embeddings_rerank retriever (opt-in; then disable kb_search)
candidates = 20              # full-text candidates the reranker reorders
threads = 1                  # torch, BLAS and OpenMP threads (set when the model loads)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvm_chat.errors import ConfigError

PLUGIN = "embeddings"
"""The plugin's name: its entry point, and the ``[plugins.NAME]`` table it reads."""

DEFAULT_THRESHOLD = 0.35
"""Below this combined probability a message is out of scope (see the README for the choice)."""

DEFAULT_MIN_SIMILARITY = 0.45
"""Below this cosine similarity to the nearest in-scope training message, out of scope."""

DEFAULT_CACHE_DIR = "var/models"
DEFAULT_CANDIDATES = 20
DEFAULT_THREADS = 1

KEYS = frozenset(
    {"train", "threshold", "min_similarity", "cache_dir", "rerank", "candidates", "threads"}
)


def _key(name: str) -> str:
    return f"plugins.{PLUGIN}.{name}"


def _path(table: Mapping[str, Any], name: str, default: str | None) -> Path | None:
    value = table.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(_key(name), f"must be a path: {value!r}")
    return Path(value)


def _number(table: Mapping[str, Any], name: str, default: float) -> float:
    value = table.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(_key(name), f"must be a number from 0 to 1: {value!r}")
    return float(value)


def _count(table: Mapping[str, Any], name: str, default: int) -> int:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(_key(name), f"must be a whole number of at least 1: {value!r}")
    return value


def _flag(table: Mapping[str, Any], name: str, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(_key(name), f"must be true or false: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class EmbeddingsConfig:
    """The plugin's settings with their defaults; see the module docstring."""

    train: Path | None = None
    threshold: float = DEFAULT_THRESHOLD
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    cache_dir: Path = Path(DEFAULT_CACHE_DIR)
    rerank: bool = False
    candidates: int = DEFAULT_CANDIDATES
    threads: int = DEFAULT_THREADS

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> EmbeddingsConfig:
        """Check ``table``; an unknown key or a bad value is a ConfigError naming the key."""
        unknown = sorted(set(table) - KEYS)
        if unknown:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(_key(unknown[0]), f"unknown key (known: {known})")
        cache_dir = _path(table, "cache_dir", DEFAULT_CACHE_DIR)
        assert cache_dir is not None  # it has a default
        return cls(
            train=_path(table, "train", None),
            threshold=_number(table, "threshold", DEFAULT_THRESHOLD),
            min_similarity=_number(table, "min_similarity", DEFAULT_MIN_SIMILARITY),
            cache_dir=cache_dir,
            rerank=_flag(table, "rerank", False),
            candidates=_count(table, "candidates", DEFAULT_CANDIDATES),
            threads=_count(table, "threads", DEFAULT_THREADS),
        )
