"""The built-in TF-IDF intent classifier, trained from a labelled CSV named in the config.

```toml
[plugins.tfidf_intents]
train = "data/intents.csv"      # columns text, label (or category); required to register
threshold = 0.175               # below this probability a message is out_of_scope
cache_dir = "var/models"        # where trained models are kept (default var/models)
```
The model is trained once per content of the CSV and saved under ``cache_dir``; later starts
load it. scikit-learn is imported only when ``train`` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from mvm_chat import IntentPrediction, Turn, hookimpl
from mvm_chat.errors import ConfigError

if TYPE_CHECKING:
    from mvm_chat.chat.components import Registrar
    from mvm_chat.intents.tfidf import TfidfIntentModel

log = structlog.get_logger(__name__)

PLUGIN = "tfidf_intents"
KEYS = frozenset({"train", "threshold", "cache_dir"})
DEFAULT_CACHE_DIR = "var/models"


class TfidfIntentClassifier:
    """Classifies a turn's text with a trained :class:`TfidfIntentModel`."""

    name = "tfidf"

    def __init__(self, model: TfidfIntentModel, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    def classify(self, turn: Turn) -> IntentPrediction:
        """The most probable intent, or ``out_of_scope`` below the threshold."""
        label, confidence = self.model.predict(turn.text, self.threshold)
        return IntentPrediction(label, confidence, source=self.name)


def _threshold(config: dict[str, Any], default: float) -> float:
    value = config.get("threshold", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"plugins.{PLUGIN}.threshold", f"must be a number from 0 to 1: {value!r}")
    return float(value)


def _path(config: dict[str, Any], key: str, default: str | None = None) -> Path:
    value = config.get(key, default)
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"plugins.{PLUGIN}.{key}", f"must be a path: {value!r}")
    return Path(value)


def build(config: dict[str, Any]) -> TfidfIntentClassifier:
    """Load (or train and save) the model that ``config`` names; bad config is a ConfigError."""
    from mvm_chat.intents.tfidf import DEFAULT_THRESHOLD, load_or_train

    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise ConfigError(f"plugins.{PLUGIN}", f"unknown key(s): {', '.join(unknown)}")
    train = _path(config, "train")
    threshold = _threshold(config, DEFAULT_THRESHOLD)
    cache_dir = _path(config, "cache_dir", DEFAULT_CACHE_DIR)
    loaded = load_or_train(train, cache_dir, None)
    event = "intents.tfidf.trained" if loaded.trained else "intents.tfidf.loaded"
    log.info(
        event,
        train=str(train),
        model=str(loaded.path),
        labels=len(loaded.model.labels),
        seconds=round(loaded.seconds, 2),
    )
    return TfidfIntentClassifier(loaded.model, threshold)


@hookimpl(trylast=True)
def register_intent_classifiers(register: Registrar) -> None:
    """Register the ``tfidf`` classifier when ``[plugins.tfidf_intents] train`` is set."""
    if register.config.get("train") is None:
        return
    register(build(register.config))
