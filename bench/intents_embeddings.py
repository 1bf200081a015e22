"""BANKING77 benchmark of the embeddings plugin's intent classifier (and its parts).

Trains on train.csv (from scratch, in a temporary cache folder, timed), then classifies every
row of test.csv one message at a time, as the service does, and prints accuracy, macro-F1 and
p50/p99 latency for:

- ``embeddings+tfidf``: the plugin as shipped (what ``mvm-chat eval intents --classifier
  embeddings`` reports), with its default out-of-scope rule;
- ``embeddings+tfidf, no oos rule``: the same with the out-of-scope rule switched off;
- ``embeddings only``: the sentence-embedding regression alone (weight 1), no out-of-scope rule.

Usage: ``.venv/bin/python bench/intents_embeddings.py [--data DIR] [--json FILE]``; the results
also go to ``bench/results/intents-embeddings-DATE.json``. ``bench/intents.py`` runs the plugin
as shipped next to the other classifiers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mvm_chat_embeddings.classifier import EmbeddingIntentClassifier
from mvm_chat_embeddings.config import DEFAULT_MIN_SIMILARITY, DEFAULT_THRESHOLD
from mvm_chat_embeddings.encoder import shared_encoder
from mvm_chat_embeddings.model import EmbeddingIntentModel, load_or_train

from mvm_chat.intents.dataset import read_labelled_csv
from mvm_chat.intents.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "banking77"


def machine() -> str:
    """CPU count and model (what ``nproc`` and ``lscpu | grep 'Model name'`` show)."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model})"


def variants(model: EmbeddingIntentModel) -> dict[str, EmbeddingIntentClassifier]:
    """The classifiers to score; all share the trained model's parts."""
    alone = EmbeddingIntentModel(
        model.encoder,
        model.regression,
        model.vectors,
        model.tfidf,
        replace(model.params, weight=1.0),
    )
    return {
        "embeddings+tfidf": EmbeddingIntentClassifier(
            model, DEFAULT_THRESHOLD, DEFAULT_MIN_SIMILARITY
        ),
        "embeddings+tfidf, no oos rule": EmbeddingIntentClassifier(model, 0.0, 0.0),
        "embeddings only, no oos rule": EmbeddingIntentClassifier(alone, 0.0, 0.0),
    }


async def run(data: Path) -> dict[str, Any]:
    rows = read_labelled_csv(data / "test.csv")
    encoder = shared_encoder()
    encoder.load()  # loading the model is start-up, not training
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as scratch:
        start = time.perf_counter()
        loaded = load_or_train(data / "train.csv", Path(scratch), encoder)
        train_s = time.perf_counter() - start
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "train_rows": sum(1 for _ in read_labelled_csv(data / "train.csv")),
        "test_rows": len(rows),
        "train_s": round(train_s, 1),
        "threshold": DEFAULT_THRESHOLD,
        "min_similarity": DEFAULT_MIN_SIMILARITY,
        "params": {"c": loaded.model.params.c, "weight": loaded.model.params.weight},
        "variants": {},
    }
    for name, classifier in variants(loaded.model).items():
        report = await evaluate(classifier, rows)
        results["variants"][name] = {
            "accuracy": round(report.accuracy, 4),
            "macro_f1": round(report.macro_f1, 4),
            "p50_ms": round(report.p50_ms, 2),
            "p99_ms": round(report.p99_ms, 2),
        }
        print(f"{name}: {results['variants'][name]}", flush=True)
    return results


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| classifier | accuracy | macro-F1 | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["variants"].items():
        lines.append(
            f"| {name} | {r['accuracy'] * 100:.2f}% | {r['macro_f1']:.4f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train/test.csv")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    results = asyncio.run(run(args.data))
    print()
    print(f"{results['date']}, {results['machine']}, training {results['train_s']} s")
    print(table(results))
    target = args.json or ROOT / "bench" / "results" / f"intents-embeddings-{results['date']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {target}")


if __name__ == "__main__":
    main()
