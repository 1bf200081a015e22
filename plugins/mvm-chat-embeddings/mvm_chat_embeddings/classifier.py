"""The ``embeddings`` intent classifier component."""

from __future__ import annotations

import asyncio

import structlog
from mvm_chat import IntentPrediction, Turn

from mvm_chat_embeddings.config import EmbeddingsConfig
from mvm_chat_embeddings.encoder import shared_encoder
from mvm_chat_embeddings.model import EmbeddingIntentModel, load_or_train

log = structlog.get_logger(__name__)


class EmbeddingIntentClassifier:
    """Classifies a turn's text with an :class:`EmbeddingIntentModel`, off the event loop."""

    name = "embeddings"

    def __init__(
        self, model: EmbeddingIntentModel, threshold: float, min_similarity: float
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.min_similarity = min_similarity

    def predict(self, text: str) -> IntentPrediction:
        """The most probable intent, or ``out_of_scope`` (see :func:`~.model.decide`). Blocking."""
        label, confidence = self.model.predict(text, self.threshold, self.min_similarity)
        return IntentPrediction(label, confidence, source=self.name)

    async def classify(self, turn: Turn) -> IntentPrediction:
        """:meth:`predict` in a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(self.predict, turn.text)


def build_classifier(config: EmbeddingsConfig) -> EmbeddingIntentClassifier:
    """Load (or train and save) the model for ``config.train``; requires ``train`` to be set."""
    if config.train is None:
        raise ValueError("no training file configured")
    loaded = load_or_train(config.train, config.cache_dir, shared_encoder(config.threads))
    log.info(
        "intents.embeddings.trained" if loaded.trained else "intents.embeddings.loaded",
        train=str(config.train),
        model=str(loaded.path),
        labels=len(loaded.model.labels),
        seconds=round(loaded.seconds, 2),
    )
    return EmbeddingIntentClassifier(loaded.model, config.threshold, config.min_similarity)
