"""How the embeddings plugin's defaults were chosen, on BANKING77's training split only.

1. Regularisation ``c`` and combination ``weight``: a stratified 80/20 split of train.csv.
2. Out-of-scope ``threshold``: pseudo out-of-scope data. 19 of the 77 intents are held out as
   "unknown"; the model is trained on 80% of the other 58 intents' rows and scored on the rest
   of them (in scope) and on the held-out intents' rows (out of scope). Three random splits.
3. ``min_similarity`` (the nearest-neighbour gate): the share of in-scope validation messages it
   would reject when each intent has only 5, 10 or 20 training examples.

Usage: ``.venv/bin/python bench/intents_embeddings_tune.py [--data DIR]``. Sentence embeddings
are computed once and kept in ``var/bench/`` (about 3 minutes on 2 cores the first time).
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from mvm_chat_embeddings.encoder import Vectors, shared_encoder
from mvm_chat_embeddings.model import EmbeddingIntentModel, EmbeddingParams, decide

from mvm_chat.intents.dataset import OUT_OF_SCOPE, LabelledText, read_training_csv
from mvm_chat.intents.tfidf import TfidfIntentModel

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "banking77"
CACHE = Path("var/bench")


class CachedEncoder:
    """Embeddings of a fixed set of texts computed once, then looked up."""

    def __init__(self, texts: Sequence[str]) -> None:
        key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        path = CACHE / f"minilm-{key}.npy"
        if path.exists():
            vectors = np.load(path)
        else:
            print(f"embedding {len(texts)} texts (kept in {path}) ...", flush=True)
            vectors = shared_encoder().encode(texts)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        self.index = {text: i for i, text in enumerate(texts)}
        self.vectors = vectors

    def encode(self, texts: Sequence[str], /) -> Vectors:
        return np.asarray(self.vectors[[self.index[t] for t in texts]], dtype=np.float32)


def split(
    rows: Sequence[LabelledText], seed: int, share: float = 0.2
) -> tuple[list[int], list[int]]:
    """A stratified split of row indices: (fit, validation)."""
    rng = np.random.default_rng(seed)
    fit: list[int] = []
    held: list[int] = []
    for label in sorted({r.label for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.label == label]
        rng.shuffle(idx)
        cut = max(1, int(len(idx) * share))
        held += idx[:cut]
        fit += idx[cut:]
    return fit, held


def tune_c_and_weight(rows: list[LabelledText], encoder: CachedEncoder) -> None:
    fit, held = split(rows, seed=1)
    fit_rows = [rows[i] for i in fit]
    texts = [rows[i].text for i in held]
    truth = np.array([rows[i].label for i in held])
    tfidf = TfidfIntentModel.train(fit_rows)
    print("\n1. validation accuracy (80/20 split of train.csv)")
    weights = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
    print("   c      " + "  ".join(f"w={w:<4}" for w in weights))
    for c in (3.0, 10.0, 30.0, 100.0):
        model = EmbeddingIntentModel.train(fit_rows, tfidf, encoder, EmbeddingParams(c=c))
        line = f"   {c:<6}"
        for w in weights:
            model.params = replace(model.params, weight=w)
            predicted = np.array(model.labels)[model.scores(texts).probabilities.argmax(axis=1)]
            line += f" {(predicted == truth).mean():.4f}"
        print(line, flush=True)


def pseudo_oos(rows: list[LabelledText], encoder: CachedEncoder) -> None:
    labels = sorted({r.label for r in rows})
    thresholds = (0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
    gates = (0.0, 0.45, 0.55)
    print("\n2. pseudo out-of-scope, 58 intents known, 19 held out: in-scope accuracy/oos recall")
    print("   seed gate  " + "  ".join(f"t={t:<11}" for t in thresholds))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        unknown = set(rng.permutation(labels)[58:].tolist())
        known_rows = [r for r in rows if r.label not in unknown]
        fit, held = split(known_rows, seed)
        fit_rows = [known_rows[i] for i in fit]
        tfidf = TfidfIntentModel.train(fit_rows)
        model = EmbeddingIntentModel.train(fit_rows, tfidf, encoder)
        test = [known_rows[i] for i in held] + [r for r in rows if r.label in unknown]
        scores = model.scores([r.text for r in test])
        for gate in gates:
            line = f"   {seed:<4} {gate:<5}"
            for t in thresholds:
                hits = oos_hits = n_in = n_oos = 0
                pairs = zip(scores.probabilities, scores.nearest, strict=True)
                for row, (proba, near) in zip(test, pairs, strict=True):
                    label, _ = decide(model.labels, proba, float(near), t, gate)
                    if row.label in unknown:
                        n_oos += 1
                        oos_hits += label == OUT_OF_SCOPE
                    else:
                        n_in += 1
                        hits += label == row.label
                line += f" {hits / n_in:.3f}/{oos_hits / n_oos:.3f}"
            print(line, flush=True)


def gate_on_sparse_data(rows: list[LabelledText], encoder: CachedEncoder) -> None:
    fit, held = split(rows, seed=1)
    held_vectors = encoder.encode([rows[i].text for i in held])
    rng = np.random.default_rng(0)
    print("\n3. in-scope validation rows below min_similarity, by training examples per intent")
    for per_label in (5, 10, 20):
        chosen: list[int] = []
        for label in sorted({r.label for r in rows}):
            idx = [i for i in fit if rows[i].label == label]
            chosen += rng.choice(idx, per_label, replace=False).tolist()
        nearest = (held_vectors @ encoder.encode([rows[i].text for i in chosen]).T).max(axis=1)
        shares = "  ".join(f"<{g}: {(nearest < g).mean():.4f}" for g in (0.4, 0.45, 0.5, 0.55))
        print(f"   {per_label:>2} per intent  {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train.csv")
    args = parser.parse_args()
    rows = read_training_csv(args.data / "train.csv")
    encoder = CachedEncoder([r.text for r in rows])
    tune_c_and_weight(rows, encoder)
    pseudo_oos(rows, encoder)
    gate_on_sparse_data(rows, encoder)


if __name__ == "__main__":
    main()
