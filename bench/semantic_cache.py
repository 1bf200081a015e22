"""BANKING77 replay of the semantic response cache: hit rate and false-hit rate by threshold.

Every query of a split is asked once, in a shuffled order (seed 0), as the first message of a
new conversation with the same system prompt, so all of them share one namespace of
:class:`mvm_chat.cache.semantic.SemanticCache` (in-process backend, the embeddings plugin's
MiniLM embedder). A query the cache cannot answer is "generated" (its answer is tagged with
the query's intent) and stored; a query it answers is a **hit**, and a **false hit** when the
stored answer was for another intent. BANKING77 has 40 paraphrases or so of each intent in
its test split, so later queries find earlier ones.

Tiers: a third of the intents (every third label, sorted) are routed to the ``api`` tier from
the start (as ``routing.intent_floors`` does), the rest to ``local``. Entries record the tier
that answered them, and the pipeline's rule applies (an entry serves only a turn routed at or
below its tier): **lower-tier serves** counts hits whose entry came from a tier below the
query's, and must be 0.

Usage: ``.venv/bin/python bench/semantic_cache.py [--split test|train]
[--thresholds 0.8,0.85,...]``; writes ``bench/results/semantic-cache-DATE[-SPLIT].json``.
The default threshold (``chat.semantic_threshold``) was chosen on the train split.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mvm_chat_embeddings.embedder import SentenceEmbedder

from mvm_chat.cache.backends import MemoryCache
from mvm_chat.cache.semantic import SemanticCache, SemanticEntry, namespace
from mvm_chat.engines.base import ChatMessage
from mvm_chat.intents.dataset import read_labelled_csv

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "banking77"
THRESHOLDS = (0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96)
TIERS = ("local", "api")
SYSTEM = [ChatMessage("system", "You are a helpful, concise customer-service assistant.")]


class Precomputed:
    """The embedder's vectors, computed once per query in one batch and served by text."""

    name = "embeddings"

    def __init__(self, texts: Sequence[str], embedder: SentenceEmbedder) -> None:
        vectors = embedder.embed(list(texts))
        self.vectors = {text: vectors[i] for i, text in enumerate(texts)}

    def embed(self, texts: Sequence[str], /) -> list[Any]:
        return [self.vectors[t] for t in texts]


async def replay(
    rows: list[tuple[str, str]], embedder: Precomputed, threshold: float
) -> dict[str, Any]:
    """Ask every row once; count hits, false hits and lower-tier serves."""
    cache = SemanticCache(MemoryCache(), embedder, threshold, ttl_s=86_400, max_entries=100_000)
    key = namespace("tenant", SYSTEM, None, None)
    labels = sorted({label for _, label in rows})
    api_intents = set(labels[::3])
    hits = false_hits = lower = 0
    lookup_s: list[float] = []
    for text, label in rows:
        tier = "api" if label in api_intents else "local"
        floor = TIERS.index(tier)
        vector = await cache.embed(text)
        started = time.perf_counter()
        found = await cache.lookup(key, vector, lambda e, f=floor: TIERS.index(e.tier) >= f)
        lookup_s.append(time.perf_counter() - started)
        if found is None:
            entry = SemanticEntry(label, 10, 20, f"{tier}-model", tier, time.time())
            await cache.store(key, vector, entry)
            continue
        hits += 1
        false_hits += found.entry.text != label
        lower += TIERS.index(found.entry.tier) < floor
    n = len(rows)
    return {
        "threshold": threshold,
        "queries": n,
        "hits": hits,
        "hit_rate": round(hits / n, 4),
        "false_hits": false_hits,
        "false_hit_rate": round(false_hits / hits, 4) if hits else 0.0,
        "correct_answers_from_cache": round((hits - false_hits) / n, 4),
        "lower_tier_serves": lower,
        "lookup_ms_p50": round(float(np.percentile(lookup_s, 50)) * 1000, 3),
        "lookup_ms_p99": round(float(np.percentile(lookup_s, 99)) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [(ex.text, ex.label) for ex in read_labelled_csv(args.data / f"{args.split}.csv")]
    random.Random(args.seed).shuffle(rows)
    started = time.perf_counter()
    embedder = Precomputed([text for text, _ in rows], SentenceEmbedder())
    embed_s = time.perf_counter() - started
    single = SentenceEmbedder()
    one_s = []
    for text, _ in rows[:200]:
        t0 = time.perf_counter()
        single.embed([text])
        one_s.append(time.perf_counter() - t0)
    results = []
    print(f"{len(rows)} {args.split} queries; embedded in {embed_s:.1f} s")
    print("threshold  hit rate  false-hit rate  correct from cache  lower-tier  lookup p50")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        result = asyncio.run(replay(rows, embedder, threshold))
        results.append(result)
        print(
            f"{threshold:9.2f}  {result['hit_rate']:8.1%}  {result['false_hit_rate']:14.1%}"
            f"  {result['correct_answers_from_cache']:18.1%}  {result['lower_tier_serves']:10d}"
            f"  {result['lookup_ms_p50']:7.2f} ms"
        )
    today = datetime.date.today().isoformat()
    out = ROOT / "bench" / "results" / f"semantic-cache-{today}-{args.split}.json"
    out.write_text(
        json.dumps(
            {
                "date": today,
                "split": args.split,
                "seed": args.seed,
                "queries": len(rows),
                "embed_one_ms_p50": round(float(np.percentile(one_s, 50)) * 1000, 2),
                "embed_one_ms_p99": round(float(np.percentile(one_s, 99)) * 1000, 2),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"one query's embedding: p50 {np.percentile(one_s, 50) * 1000:.1f} ms; wrote {out}")


if __name__ == "__main__":
    main()
