"""mvm-chat-embeddings: sentence-embedding intent classification and passage reranking.

An mvm_chat plugin (entry point ``embeddings`` in the group ``mvm_chat``), configured by
``[plugins.embeddings]`` (see :mod:`mvm_chat_embeddings.config`). It registers

- the intent classifier ``embeddings`` when ``train`` names a labelled CSV, and
- the retriever ``embeddings_rerank`` inside a running app when ``rerank = true``, and
- the embedder ``embeddings`` for the semantic response cache (``[chat] semantic_cache =
  "embeddings"``).

Importing this module is cheap: torch, sentence-transformers and scikit-learn load only when a
component is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mvm_chat import hookimpl

from mvm_chat_embeddings.config import EmbeddingsConfig

if TYPE_CHECKING:
    from mvm_chat.chat.components import Registrar

__version__ = "0.1.0"


@hookimpl
def register_intent_classifiers(register: Registrar) -> None:
    """Register ``embeddings`` when ``[plugins.embeddings] train`` is set (trains once)."""
    config = EmbeddingsConfig.from_table(register.config)
    if config.train is None:
        return
    from mvm_chat_embeddings.classifier import build_classifier

    register(build_classifier(config))


@hookimpl
def register_retrievers(register: Registrar) -> None:
    """Register ``embeddings_rerank`` inside a running app (it needs the database)."""
    config = EmbeddingsConfig.from_table(register.config)
    if not config.rerank or register.services is None:
        return
    from mvm_chat_embeddings.encoder import shared_encoder
    from mvm_chat_embeddings.reranker import EmbeddingReranker

    register(
        EmbeddingReranker.over_kb(
            register.services.db, shared_encoder(config.threads), config.candidates
        )
    )


@hookimpl
def register_embedders(register: Registrar) -> None:
    """Register the embedder ``embeddings`` (the model loads on its first use)."""
    from mvm_chat_embeddings.embedder import SentenceEmbedder

    register(SentenceEmbedder(EmbeddingsConfig.from_table(register.config).threads))
