"""The cache hit paths inside the server: exact hits, semantic hits and misses, side by side.

Starts the stand-in upstream (``bench/upstream.py``) and ``mvm-chat serve`` (one worker, a fresh
Postgres database, a Redis key prefix, the ledger on, the semantic cache on with the embeddings
plugin), then, one request at a time and interleaved, asks

- **miss**: a new question with ``Cache-Control: no-cache`` (the upstream answers),
- **exact**: a question asked before, word for word (the exact cache answers),
- **semantic**: a BANKING77 test query whose paraphrase was asked before and that the semantic
  cache answers (pairs found with the embeddings plugin beforehand, similarity >= 0.95),

and reads each reply's ``Server-Timing`` (from the request's arrival until the response starts,
including the durable ledger write). Writes ``bench/results/cache-hits-DATE.json``.

Usage: ``.venv/bin/python bench/cache_hits.py [--requests 200]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_services import MvmChat, gateway_catalog, start_upstream
from mvm_chat_embeddings.embedder import SentenceEmbedder
from processes import ADMIN_POSTGRES, REDIS_URL, load_average, machine, source_state

from mvm_chat.intents.dataset import read_labelled_csv

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "banking77"
SEMANTIC = '\n[chat]\nsemantic_cache = "embeddings"\n'


def paraphrase_pairs(count: int) -> list[tuple[str, str]]:
    """Pairs of different BANKING77 test queries of one intent with similarity >= 0.95."""
    rows = [(ex.text, ex.label) for ex in read_labelled_csv(DATA / "test.csv")]
    vectors = np.asarray(SentenceEmbedder().embed([text for text, _ in rows]))
    scores = vectors @ vectors.T
    pairs: list[tuple[str, str]] = []
    used: set[int] = set()
    for i, j in zip(*np.nonzero(np.triu(scores, 1) >= 0.95), strict=True):
        a, b = rows[i], rows[j]
        if a[1] == b[1] and a[0].lower() != b[0].lower() and not {i, j} & used:
            pairs.append((a[0], b[0]))
            used |= {i, j}
    random.Random(0).shuffle(pairs)
    return pairs[:count]


def ask(client: httpx.Client, text: str, no_cache: bool = False) -> tuple[str, float]:
    headers = {"Cache-Control": "no-cache"} if no_cache else {}
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    response.raise_for_status()
    timing = response.headers["server-timing"]
    return str(response.json()["mvm"]["cache"]), float(timing.split("dur=")[1].split(",")[0])


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    pairs = paraphrase_pairs(args.requests)
    work = Path(tempfile.mkdtemp(prefix="mvm-cache-hits-"))
    upstream, url = start_upstream(work, tokens=9, delay_ms=0)
    server = MvmChat(work, gateway_catalog(url) + SEMANTIC, ADMIN_POSTGRES, REDIS_URL)
    times: dict[str, list[float]] = {"miss": [], "exact": [], "semantic": []}
    unexpected: dict[str, int] = {}
    try:
        server.start()
        auth = {"Authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            ask(client, "warm up: load the embedding model")
            for first, paraphrase in pairs:
                ask(client, first)  # stores it in both caches
                for kind, text, no_cache in (
                    ("miss", f"a new question {uuid.uuid4()}", True),
                    ("exact", first, False),
                    ("semantic", paraphrase, False),
                ):
                    cache, took = ask(client, text, no_cache)
                    expected = {"miss": "bypass", "exact": "hit", "semantic": "semantic"}[kind]
                    if cache == expected:
                        times[kind].append(took)
                    else:
                        unexpected[f"{kind}:{cache}"] = unexpected.get(f"{kind}:{cache}", 0) + 1
    finally:
        server.stop()
        upstream.stop()
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "source": source_state(),
        "load_average": load_average(),
        "pairs": len(pairs),
        "server_timing": {kind: summary(values) for kind, values in times.items() if values},
        "unexpected": unexpected,
    }
    out = ROOT / "bench" / "results" / f"cache-hits-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for kind, figures in result["server_timing"].items():
        p50, p99 = figures["p50_ms"], figures["p99_ms"]
        print(f"{kind:9s} n={figures['n']:4d}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms")
    print(f"unexpected cache results: {unexpected or 'none'}; wrote {out}")


if __name__ == "__main__":
    main()
