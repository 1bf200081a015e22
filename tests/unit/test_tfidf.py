"""The TF-IDF intent model and its plugin: training, out-of-scope detection, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mvm_chat import IntentPrediction, Turn
from mvm_chat.default_plugins.tfidf_intents import TfidfIntentClassifier, build
from mvm_chat.errors import ConfigError
from mvm_chat.intents.dataset import OUT_OF_SCOPE, read_training_csv
from mvm_chat.intents.tfidf import TfidfIntentModel, TfidfParams, load_or_train

INTENTS = {
    "card_arrival": [
        "where is my new card",
        "my card has not arrived yet",
        "when will my card arrive",
        "card still not delivered",
        "how long until my card comes",
        "is my card on its way",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "how much is one euro in dollars",
        "currency conversion rate today",
        "what rate for changing pounds to euros",
        "is the exchange rate fair",
        "show me the conversion rate",
    ],
    "lost_card": [
        "i lost my card",
        "someone stole my card",
        "my card is missing",
        "i cannot find my card anywhere",
        "report a stolen card",
        "my wallet with the card is gone",
    ],
}
OOS = ["what is the weather like", "tell me a joke", "who won the football match"]


def write_csv(path: Path, with_oos: bool = False) -> Path:
    lines = ["text,label"]
    lines += [f"{text},{label}" for label, texts in INTENTS.items() for text in texts]
    if with_oos:
        lines += [f"{text},oos" for text in OOS]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def model(tmp_path: Path) -> TfidfIntentModel:
    return TfidfIntentModel.train(read_training_csv(write_csv(tmp_path / "train.csv")))


def test_predicts_the_intent_of_unseen_phrasings(model: TfidfIntentModel) -> None:
    assert model.labels == sorted(INTENTS)
    for text, expected in [
        ("my card has still not arrived", "card_arrival"),
        ("what is your euro exchange rate", "exchange_rate"),
        ("somebody stole my card yesterday", "lost_card"),
    ]:
        label, confidence = model.predict(text, threshold=0.0)
        assert label == expected
        assert 1 / 3 < confidence <= 1.0


def test_probabilities_cover_every_label(model: TfidfIntentModel) -> None:
    probabilities = model.probabilities("where is my card")

    assert set(probabilities) == set(INTENTS)
    assert sum(probabilities.values()) == pytest.approx(1.0)


def test_below_the_threshold_a_message_is_out_of_scope(model: TfidfIntentModel) -> None:
    label, p = model.predict("quantum chromodynamics lecture", threshold=0.0)
    assert label in INTENTS

    assert model.predict("quantum chromodynamics lecture", threshold=0.99) == (
        OUT_OF_SCOPE,
        pytest.approx(1.0 - p),
    )


def test_out_of_scope_training_rows_are_learnt(tmp_path: Path) -> None:
    rows = read_training_csv(write_csv(tmp_path / "train.csv", with_oos=True))
    model = TfidfIntentModel.train(rows)

    assert OUT_OF_SCOPE in model.labels
    assert model.predict("what will the weather be like", threshold=0.0)[0] == OUT_OF_SCOPE
    assert model.predict("when does my card arrive", threshold=0.0)[0] == "card_arrival"


def test_save_and_load_give_the_same_predictions(model: TfidfIntentModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m" / "model.joblib")
    loaded = TfidfIntentModel.load(tmp_path / "m" / "model.joblib")

    assert loaded.params == model.params
    assert loaded.probabilities("i lost my card") == model.probabilities("i lost my card")
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["model.joblib"]


def test_the_cache_follows_content_and_parameters(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "train.csv")
    first = load_or_train(csv, tmp_path / "cache")
    again = load_or_train(csv, tmp_path / "cache")
    other_params = load_or_train(csv, tmp_path / "cache", TfidfParams(c=5.0))
    csv.write_text(csv.read_text() + "my card is lost,lost_card\n")
    changed = load_or_train(csv, tmp_path / "cache")

    assert (first.trained, again.trained, other_params.trained, changed.trained) == (
        True,
        False,
        True,
        True,
    )
    assert again.path == first.path
    assert len({first.path, other_params.path, changed.path}) == 3


def test_an_unreadable_cache_file_is_replaced(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "train.csv")
    first = load_or_train(csv, tmp_path / "cache")
    first.path.write_bytes(b"not a model")

    again = load_or_train(csv, tmp_path / "cache")

    assert again.trained
    assert not load_or_train(csv, tmp_path / "cache").trained


def test_the_plugin_loads_the_saved_model_instead_of_retraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config: dict[str, Any] = {
        "train": str(write_csv(tmp_path / "train.csv")),
        "cache_dir": str(tmp_path / "models"),
        "threshold": 0.5,
    }
    first = build(config)
    assert len(list((tmp_path / "models").glob("*.joblib"))) == 1

    def no_training(*args: Any, **kwargs: Any) -> TfidfIntentModel:
        raise AssertionError("retrained although a saved model exists")

    monkeypatch.setattr(TfidfIntentModel, "train", no_training)
    second = build(config)

    turn = Turn(text="my card has not arrived", conversation_id="c", tenant="t")
    assert isinstance(second, TfidfIntentClassifier)
    assert second.name == "tfidf"
    assert second.threshold == 0.5
    prediction = second.classify(turn)
    assert isinstance(prediction, IntentPrediction)
    assert (prediction.label, prediction.source) == ("card_arrival", "tfidf")
    assert prediction == first.classify(turn)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"threshold": 1.5}, "plugins.tfidf_intents.threshold"),
        ({"threshold": "high"}, "plugins.tfidf_intents.threshold"),
        ({"epochs": 3}, "plugins.tfidf_intents"),
        ({"cache_dir": 7}, "plugins.tfidf_intents.cache_dir"),
    ],
)
def test_bad_plugin_config_is_a_config_error(
    tmp_path: Path, config: dict[str, Any], key: str
) -> None:
    config = {"train": str(write_csv(tmp_path / "train.csv")), **config}

    with pytest.raises(ConfigError) as caught:
        build(config)

    assert caught.value.key == key


def test_a_malformed_training_file_fails_the_plugin_with_file_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\nhi,greet\nhello,greet\nbye,farewell\n")

    with pytest.raises(ConfigError, match=f"{csv}:4: label 'farewell' has only one example"):
        build({"train": str(csv), "cache_dir": str(tmp_path / "models")})
    with pytest.raises(ConfigError, match="cannot read"):
        build({"train": str(tmp_path / "absent.csv"), "cache_dir": str(tmp_path / "models")})


def test_registered_through_the_plugin_hook_only_when_train_is_set(tmp_path: Path) -> None:
    from mvm_chat.chat.components import register_from
    from mvm_chat.plugins import load_plugins
    from mvm_chat.settings import Settings

    plugins = load_plugins(only=[])
    train = str(write_csv(tmp_path / "train.csv"))
    cache = str(tmp_path / "models")

    unset = register_from(plugins, "intent_classifier", Settings(), only="tfidf_intents")
    found = register_from(
        plugins,
        "intent_classifier",
        Settings(plugins={"tfidf_intents": {"train": train, "cache_dir": cache}}),
        only="tfidf_intents",
    )

    assert unset == []
    assert [(c.plugin, c.name) for c in found] == [("tfidf_intents", "tfidf")]


def test_a_cache_that_cannot_be_written_still_gives_a_model(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "train.csv")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")

    loaded = load_or_train(csv, blocked / "models")

    assert loaded.trained
    assert loaded.model.predict("i lost my card", threshold=0.0)[0] == "lost_card"
