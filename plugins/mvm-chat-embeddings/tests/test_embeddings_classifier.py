"""The ``embeddings`` intent classifier: training, prediction, out of scope, persistence."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FAR_AWAY, PARAPHRASES, intent_rows, write_csv
from mvm_chat import IntentPrediction, Turn
from mvm_chat.chat.components import register_from
from mvm_chat.errors import ConfigError
from mvm_chat.intents.dataset import OUT_OF_SCOPE
from mvm_chat.plugins import PluginSet, load_plugins
from mvm_chat.settings import load_settings

from mvm_chat_embeddings.classifier import EmbeddingIntentClassifier
from mvm_chat_embeddings.encoder import Encoder
from mvm_chat_embeddings.model import (
    EmbeddingIntentModel,
    LoadedModel,
    combine,
    decide,
    load_or_train,
)


@pytest.fixture(scope="module")
def plugins() -> PluginSet:
    return load_plugins(only=["embeddings"])


def turn(text: str) -> Turn:
    return Turn(text=text, conversation_id="c1", tenant="acme")


def classifiers(plugins: PluginSet, config: dict[str, object]) -> list[object]:
    settings = load_settings(None, environ={})
    found = register_from(plugins, "intent_classifier", settings, only="embeddings", config=config)
    return [c.obj for c in found]


def test_nothing_is_registered_without_a_training_file(plugins: PluginSet) -> None:
    assert classifiers(plugins, {}) == []
    assert classifiers(plugins, {"threshold": 0.5, "rerank": False}) == []


async def test_registered_from_the_config_table(
    plugins: PluginSet, train_csv: Path, cache_dir: Path, tmp_path: Path, trained: LoadedModel
) -> None:
    config = tmp_path / "mvm_chat.toml"
    config.write_text(
        f'[plugins.embeddings]\ntrain = "{train_csv}"\ncache_dir = "{cache_dir}"\n'
        "threshold = 0.25\n"
    )
    settings = load_settings(config, environ={})
    [component] = register_from(plugins, "intent_classifier", settings)
    assert (component.plugin, component.name) == ("embeddings", "embeddings")
    classifier = component.obj
    assert classifier.threshold == 0.25
    for text, label in PARAPHRASES:
        prediction = await classifier.classify(turn(text))
        assert prediction == IntentPrediction(label, prediction.confidence, "embeddings")
        assert 0.25 <= prediction.confidence <= 1


async def test_far_away_messages_are_out_of_scope(trained: LoadedModel) -> None:
    classifier = EmbeddingIntentClassifier(trained.model, threshold=0.3, min_similarity=0.45)
    for text in FAR_AWAY:
        prediction = await classifier.classify(turn(text))
        assert prediction.label == OUT_OF_SCOPE
        assert 0.5 < prediction.confidence <= 1


async def test_the_threshold_decides_out_of_scope(trained: LoadedModel) -> None:
    text, label = PARAPHRASES[1]
    strict = EmbeddingIntentClassifier(trained.model, threshold=1.0, min_similarity=0.0)
    lenient = EmbeddingIntentClassifier(trained.model, threshold=0.0, min_similarity=0.0)
    assert (await strict.classify(turn(text))).label == OUT_OF_SCOPE
    assert (await lenient.classify(turn(text))).label == label
    assert (await lenient.classify(turn(FAR_AWAY[0]))).label != OUT_OF_SCOPE


async def test_classify_runs_in_a_worker_thread(trained: LoadedModel) -> None:
    seen: list[threading.Thread] = []

    class Spy(EmbeddingIntentClassifier):
        def predict(self, text: str) -> IntentPrediction:
            seen.append(threading.current_thread())
            return super().predict(text)

    spy = Spy(trained.model, threshold=0.3, min_similarity=0.45)
    results = await asyncio.gather(*(spy.classify(turn(t)) for t, _ in PARAPHRASES))
    assert [r.label for r in results] == [label for _, label in PARAPHRASES]
    assert seen and threading.main_thread() not in seen


def test_a_second_start_loads_instead_of_training(
    train_csv: Path,
    cache_dir: Path,
    encoder: Encoder,
    trained: LoadedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrained")

    monkeypatch.setattr(EmbeddingIntentModel, "train", no_training)
    again = load_or_train(train_csv, cache_dir, encoder)
    assert (again.trained, again.path) == (False, trained.path)
    probe = [text for text, _ in PARAPHRASES]
    before, after = trained.model.scores(probe), again.model.scores(probe)
    np.testing.assert_allclose(after.probabilities, before.probabilities)
    np.testing.assert_allclose(after.nearest, before.nearest)


def test_changed_data_is_trained_again(
    tmp_path: Path, cache_dir: Path, encoder: Encoder, trained: LoadedModel
) -> None:
    extra = [("Do you support Apple Pay?", "apple_pay"), ("Can I use Apple Pay?", "apple_pay")]
    changed = write_csv(tmp_path / "train.csv", intent_rows() + extra)
    loaded = load_or_train(changed, cache_dir, encoder)
    assert loaded.trained and loaded.path != trained.path
    assert "apple_pay" in loaded.model.labels


def test_out_of_scope_rows_are_learnt_as_a_class(tmp_path: Path, encoder: Encoder) -> None:
    oos = [("Tell me a joke", "oos"), ("What's the weather like?", "oos"), ("Sing a song", "oos")]
    data = write_csv(tmp_path / "train.csv", intent_rows() + oos)
    model = load_or_train(data, tmp_path / "models", encoder).model
    assert OUT_OF_SCOPE in model.labels
    assert len(model.vectors) == len(intent_rows())  # the gate compares with in-scope rows only
    assert model.predict("Tell me a funny joke", threshold=0.0, min_similarity=0.0)[0] == (
        OUT_OF_SCOPE
    )


def test_a_malformed_training_file_names_the_file(plugins: PluginSet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("message,label\nhello,greeting\n")
    with pytest.raises(ConfigError, match=r"bad\.csv"):
        classifiers(plugins, {"train": str(bad), "cache_dir": str(tmp_path)})


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"train": "x.csv", "treshold": 0.3}, "plugins.embeddings.treshold"),
        ({"train": "x.csv", "threshold": 2}, "plugins.embeddings.threshold"),
        ({"train": "x.csv", "min_similarity": "high"}, "plugins.embeddings.min_similarity"),
        ({"train": 3}, "plugins.embeddings.train"),
        ({"candidates": 0}, "plugins.embeddings.candidates"),
        ({"rerank": "yes"}, "plugins.embeddings.rerank"),
    ],
)
def test_bad_settings_name_the_key(plugins: PluginSet, config: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        classifiers(plugins, config)
    assert caught.value.key == key


def test_combine_is_a_renormalised_weighted_geometric_mean() -> None:
    p_emb = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    p_tfidf = np.array([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    combined = combine(p_emb, p_tfidf, 0.6)
    np.testing.assert_allclose(combined.sum(axis=1), 1.0)
    expected = p_emb[0] ** 0.6 * p_tfidf[0] ** 0.4
    np.testing.assert_allclose(combined[0], expected / expected.sum())
    np.testing.assert_allclose(combine(p_emb, p_tfidf, 1.0), p_emb)


def test_decide() -> None:
    labels = ["a", "b", OUT_OF_SCOPE]
    assert decide(labels, np.array([0.8, 0.1, 0.1]), 0.9, 0.3, 0.45) == ("a", 0.8)
    assert decide(labels, np.array([0.1, 0.2, 0.7]), 0.9, 0.3, 0.45) == (OUT_OF_SCOPE, 0.7)
    label, confidence = decide(labels, np.array([0.25, 0.2, 0.55]), 0.9, 0.3, 0.45)
    assert (label, round(confidence, 6)) == (OUT_OF_SCOPE, 0.55)
    label, confidence = decide(labels[:2], np.array([0.28, 0.72]), 0.9, 0.75, 0.45)
    assert (label, round(confidence, 6)) == (OUT_OF_SCOPE, 0.28)
    label, confidence = decide(labels[:2], np.array([0.9, 0.1]), 0.2, 0.3, 0.45)
    assert (label, round(confidence, 6)) == (OUT_OF_SCOPE, 0.8)
