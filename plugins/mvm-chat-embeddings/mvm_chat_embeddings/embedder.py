"""The embedder ``embeddings``: MiniLM sentence embeddings for mvm_chat's semantic cache."""

from __future__ import annotations

from collections.abc import Sequence

from mvm_chat_embeddings.encoder import Encoder, Vectors, shared_encoder


class SentenceEmbedder:
    """``embed(texts)``: unit-length all-MiniLM-L6-v2 embeddings (blocking; the model loads on
    the first call and is shared with the classifier and the reranker)."""

    name = "embeddings"

    def __init__(self, threads: int = 1, encoder: Encoder | None = None) -> None:
        self.threads = threads
        self._encoder = encoder

    def embed(self, texts: Sequence[str], /) -> Vectors:
        if self._encoder is None:
            self._encoder = shared_encoder(self.threads)
        return self._encoder.encode(list(texts))
