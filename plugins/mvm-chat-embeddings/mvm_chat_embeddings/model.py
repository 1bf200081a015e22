"""The intent model: sentence embeddings and TF-IDF, each with a logistic regression, combined.

Each message is embedded with all-MiniLM-L6-v2 and classified by a multinomial logistic
regression over the embeddings; the core's TF-IDF model (:mod:`mvm_chat.intents.tfidf`) gives a
second opinion. The two probability vectors are combined log-linearly (a weighted geometric
mean, renormalised): ``p ∝ p_emb ** w * p_tfidf ** (1 - w)``. The best label's combined
probability is the confidence. A message is out of scope when that probability is below the
threshold, or when it is far from every in-scope training message (cosine similarity to the
nearest one below ``min_similarity``): a softmax can be confident about text unlike anything it
was trained on, the nearest-neighbour similarity is not.

Training data comes through the core's CSV loader; out-of-scope rows are used exactly as the
TF-IDF model uses them (as one more class when there are at least two). The TF-IDF model is kept
in its own cache file (shared with the ``tfidf_intents`` plugin when both train on one file);
this module saves the embedding regression under a name derived from the CSV's content and every
parameter, so an unchanged file is trained once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
import structlog
from mvm_chat.intents.dataset import OUT_OF_SCOPE, LabelledText, read_training_csv
from mvm_chat.intents.tfidf import TfidfIntentModel, TfidfParams
from mvm_chat.intents.tfidf import load_or_train as load_or_train_tfidf
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from mvm_chat_embeddings.config import DEFAULT_MIN_SIMILARITY, DEFAULT_THRESHOLD
from mvm_chat_embeddings.encoder import TextEncoder, Vectors, model_version

log = structlog.get_logger(__name__)

FORMAT = 1
"""Version of the saved file's layout; part of the cache key."""

Probabilities = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EmbeddingParams:
    """What training and prediction depend on besides the data (tuned on BANKING77's train split).

    ``c`` is the inverse regularisation of the embedding regression; ``weight`` the share of the
    embeddings in the combination (the TF-IDF model has ``1 - weight``). The out-of-scope
    thresholds are settings, not parameters: they do not change what is trained.
    """

    c: float = 30.0
    weight: float = 0.6
    max_iter: int = 3000

    def fingerprint(self) -> str:
        """A stable text form of the parameters and of what a saved file relies on."""
        return json.dumps(
            {
                **asdict(self),
                "format": FORMAT,
                "encoder": model_version(),
                "sklearn": sklearn.__version__,
                "tfidf": TfidfParams().fingerprint(),
            },
            sort_keys=True,
        )


def combine(p_emb: Probabilities, p_tfidf: Probabilities, weight: float) -> Probabilities:
    """Row-wise weighted geometric mean of two probability matrices, renormalised."""
    logits = weight * np.log(np.clip(p_emb, 1e-12, None))
    logits += (1.0 - weight) * np.log(np.clip(p_tfidf, 1e-12, None))
    logits -= logits.max(axis=1, keepdims=True)
    combined = np.exp(logits)
    result: Probabilities = combined / combined.sum(axis=1, keepdims=True)
    return result


@dataclass(frozen=True, slots=True)
class Scores:
    """What the model says about some messages: combined label probabilities (one row per
    message, columns in label order) and each message's similarity to the nearest in-scope
    training message."""

    probabilities: Probabilities
    nearest: NDArray[np.float32]


def decide(
    labels: Sequence[str],
    probabilities: Probabilities,
    nearest: float,
    threshold: float = DEFAULT_THRESHOLD,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> tuple[str, float]:
    """``(label, confidence)`` from one message's probabilities and nearest-neighbour similarity.

    The best label and its probability, unless the message is out of scope: a learnt
    out-of-scope class wins (confidence: its probability), or the best intent's probability is
    below ``threshold`` or ``nearest`` is below ``min_similarity`` (confidence: one minus the
    smaller of the two, so the less the evidence for an intent, the surer the out-of-scope call).
    """
    best = int(np.argmax(probabilities))
    label, p = labels[best], float(probabilities[best])
    if label == OUT_OF_SCOPE:
        return OUT_OF_SCOPE, p
    if p < threshold or nearest < min_similarity:
        return OUT_OF_SCOPE, 1.0 - max(0.0, min(p, nearest))
    return label, p


class EmbeddingIntentModel:
    """A trained embedding regression, the in-scope training embeddings (for the nearest-neighbour
    similarity), and the TF-IDF model they are combined with."""

    def __init__(
        self,
        encoder: TextEncoder,
        regression: LogisticRegression,
        vectors: Vectors,
        tfidf: TfidfIntentModel,
        params: EmbeddingParams,
    ) -> None:
        labels = [str(label) for label in regression.classes_]
        if labels != tfidf.labels:
            raise ValueError("the embedding and TF-IDF models know different labels")
        self.encoder = encoder
        self.regression = regression
        self.vectors = vectors
        self.tfidf = tfidf
        self.params = params
        self.labels = labels

    @classmethod
    def train(
        cls,
        rows: Sequence[LabelledText],
        tfidf: TfidfIntentModel,
        encoder: TextEncoder,
        params: EmbeddingParams | None = None,
    ) -> EmbeddingIntentModel:
        """Fit the embedding regression on the rows whose labels ``tfidf`` learnt."""
        params = params or EmbeddingParams()
        known = set(tfidf.labels)
        used = [row for row in rows if row.label in known]
        vectors = encoder.encode([row.text for row in used])
        regression = LogisticRegression(C=params.c, max_iter=params.max_iter)
        regression.fit(vectors, [row.label for row in used])
        in_scope = np.array([row.in_scope for row in used], dtype=bool)
        return cls(encoder, regression, vectors[in_scope], tfidf, params)

    def scores(self, texts: Sequence[str]) -> Scores:
        """Combined probabilities and nearest-neighbour similarities of ``texts``. Blocking."""
        vectors = self.encoder.encode(texts)
        p_emb = self.regression.predict_proba(vectors)
        p_tfidf = self.tfidf.probability_matrix(texts)
        if len(self.vectors):
            nearest = (vectors @ self.vectors.T).max(axis=1)
        else:
            nearest = np.ones(len(texts), dtype=np.float32)
        return Scores(combine(p_emb, p_tfidf, self.params.weight), nearest)

    def predict(
        self,
        text: str,
        threshold: float = DEFAULT_THRESHOLD,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> tuple[str, float]:
        """``(label, confidence)`` for one message (see :func:`decide`). Blocking."""
        scores = self.scores([text])
        return decide(
            self.labels,
            scores.probabilities[0],
            float(scores.nearest[0]),
            threshold,
            min_similarity,
        )

    def save(self, path: Path) -> None:
        """Write the embedding regression and training embeddings to ``path`` atomically."""
        payload = {
            "fingerprint": self.params.fingerprint(),
            "regression": self.regression,
            "vectors": self.vectors,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(payload, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(
        cls, path: Path, tfidf: TfidfIntentModel, encoder: TextEncoder, params: EmbeddingParams
    ) -> EmbeddingIntentModel:
        """Read a file written by :meth:`save` with the same parameters (only files we wrote)."""
        payload: dict[str, Any] = joblib.load(path)
        if payload.get("fingerprint") != params.fingerprint():
            raise ValueError(f"{path} was written with other parameters or versions")
        return cls(encoder, payload["regression"], payload["vectors"], tfidf, params)


def cache_path(csv_path: Path, cache_dir: Path, params: EmbeddingParams) -> Path:
    """Where the model trained on this file's content with these parameters is kept."""
    digest = hashlib.sha256(csv_path.read_bytes())
    digest.update(params.fingerprint().encode())
    return cache_dir / f"embeddings-{digest.hexdigest()[:24]}.joblib"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What :func:`load_or_train` found or made; ``trained`` is False when loaded from cache."""

    model: EmbeddingIntentModel
    path: Path
    trained: bool
    seconds: float


def load_or_train(
    csv_path: Path, cache_dir: Path, encoder: TextEncoder, params: EmbeddingParams | None = None
) -> LoadedModel:
    """The cached model for this training file and parameters, trained and saved if missing.

    A malformed training file raises :class:`~mvm_chat.errors.ConfigError` naming the file and
    line; an unreadable cached file is logged and replaced.
    """
    params = params or EmbeddingParams()
    start = time.perf_counter()
    tfidf = load_or_train_tfidf(csv_path, cache_dir).model
    path = cache_path(csv_path, cache_dir, params)
    if path.exists():
        try:
            model = EmbeddingIntentModel.load(path, tfidf, encoder, params)
            return LoadedModel(model, path, False, time.perf_counter() - start)
        except Exception as exc:
            log.warning(
                "intents.embeddings.cache_unreadable",
                path=str(path),
                error=f"{type(exc).__name__}: {exc}",
            )
    model = EmbeddingIntentModel.train(read_training_csv(csv_path), tfidf, encoder, params)
    model.save(path)
    return LoadedModel(model, path, True, time.perf_counter() - start)
