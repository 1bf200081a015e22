"""The TF-IDF intent model: word and character n-grams into a multinomial logistic regression.

A message whose most probable intent has a probability below the threshold is out of scope.
Rows labelled out of scope in the training data, when there are at least two, are learnt as one
more class, so that messages like them are recognised as out of scope directly.

The model is saved with joblib under a name derived from the training file's content and the
parameters (:func:`load_or_train`), so that an unchanged file is trained only once.
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
import numpy.typing as npt
import sklearn
import structlog
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from mvm_chat.intents.dataset import OUT_OF_SCOPE, LabelledText, read_training_csv

log = structlog.get_logger(__name__)

DEFAULT_THRESHOLD = 0.175
"""Below this probability of its best intent, a message is out of scope (see docs/benchmarks.md)."""

FORMAT = 1
"""Version of the saved file's layout; part of the cache key."""


@dataclass(frozen=True, slots=True)
class TfidfParams:
    """What training depends on besides the data; every field is part of the cache key."""

    c: float = 20.0
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    max_iter: int = 3000

    def fingerprint(self) -> str:
        """A stable text form of the parameters, with the library versions the file relies on."""
        return json.dumps(
            {**asdict(self), "format": FORMAT, "sklearn": sklearn.__version__}, sort_keys=True
        )


def _features(params: TfidfParams) -> FeatureUnion:
    return FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=params.word_ngrams, sublinear_tf=True)),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=params.char_ngrams, sublinear_tf=True
                ),
            ),
        ]
    )


class TfidfIntentModel:
    """A trained model: :meth:`predict` gives a label (or ``out_of_scope``) and a confidence."""

    def __init__(
        self, features: FeatureUnion, model: LogisticRegression, params: TfidfParams
    ) -> None:
        self.features = features
        self.model = model
        self.params = params
        self.labels: list[str] = [str(label) for label in model.classes_]

    @classmethod
    def train(
        cls, rows: Sequence[LabelledText], params: TfidfParams | None = None
    ) -> TfidfIntentModel:
        """Fit on ``rows``; out-of-scope rows become a class when there are at least two."""
        params = params or TfidfParams()
        oos = sum(1 for row in rows if not row.in_scope)
        used = [row for row in rows if row.in_scope or oos >= 2]
        features = _features(params)
        matrix = features.fit_transform([row.text for row in used])
        model = LogisticRegression(C=params.c, max_iter=params.max_iter)
        model.fit(matrix, [row.label for row in used])
        return cls(features, model, params)

    def probability_matrix(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """One row per text, one column per label (in :attr:`labels` order)."""
        proba: npt.NDArray[np.float64] = self.model.predict_proba(self.features.transform(texts))
        return proba

    def probabilities(self, text: str) -> dict[str, float]:
        """The probability of every label the model knows, for one message."""
        proba = self.probability_matrix([text])[0]
        return {label: float(p) for label, p in zip(self.labels, proba, strict=True)}

    def predict(self, text: str, threshold: float = DEFAULT_THRESHOLD) -> tuple[str, float]:
        """``(label, confidence)`` for one message.

        The label is the most probable intent and the confidence its probability, unless the
        message is out of scope: the learnt out-of-scope class wins, or the best intent's
        probability is below ``threshold``. Then the label is ``out_of_scope`` and the confidence
        is the probability that the message is none of the intents (one minus the best intent's).
        """
        proba = self.probability_matrix([text])[0]
        best = int(np.argmax(proba))
        label, p = self.labels[best], float(proba[best])
        if label == OUT_OF_SCOPE:
            return OUT_OF_SCOPE, p
        if p < threshold:
            return OUT_OF_SCOPE, 1.0 - p
        return label, p

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` atomically (a reader never sees half a file)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "fingerprint": self.params.fingerprint(),
            "params": asdict(self.params),
            "features": self.features,
            "model": self.model,
        }
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(payload, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; other workers may read it
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TfidfIntentModel:
        """Read a model written by :meth:`save` (only load files this service wrote)."""
        payload: dict[str, Any] = joblib.load(path)
        params = TfidfParams(**{k: _tuples(v) for k, v in payload["params"].items()})
        if payload.get("fingerprint") != params.fingerprint():
            raise ValueError(f"{path} was written by another version")
        return cls(payload["features"], payload["model"], params)


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def cache_path(
    csv_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], params: TfidfParams
) -> Path:
    """Where the model trained on this file's content with these parameters is kept."""
    digest = hashlib.sha256()
    digest.update(Path(csv_path).read_bytes())
    digest.update(params.fingerprint().encode())
    return Path(cache_dir) / f"tfidf-{digest.hexdigest()[:24]}.joblib"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What :func:`load_or_train` found or made."""

    model: TfidfIntentModel
    path: Path
    trained: bool
    seconds: float


def load_or_train(
    csv_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    params: TfidfParams | None = None,
) -> LoadedModel:
    """The cached model for this training file and parameters, trained and saved if missing.

    A malformed training file raises :class:`~mvm_chat.errors.ConfigError`; a cached file that
    cannot be read is logged and replaced, and one that cannot be written is logged.
    """
    params = params or TfidfParams()
    start = time.perf_counter()
    try:
        path = cache_path(csv_path, cache_dir, params)
    except OSError:
        read_training_csv(csv_path)  # raises the ConfigError that names the file
        raise
    if path.exists():
        try:
            model = TfidfIntentModel.load(path)
            return LoadedModel(model, path, False, time.perf_counter() - start)
        except Exception as exc:
            log.warning(
                "intents.tfidf.cache_unreadable",
                path=str(path),
                error=f"{type(exc).__name__}: {exc}",
            )
    rows = read_training_csv(csv_path)
    model = TfidfIntentModel.train(rows, params)
    try:
        model.save(path)
    except OSError as exc:  # still usable; the next start trains again
        log.warning("intents.tfidf.cache_unwritable", path=str(path), error=str(exc))
    return LoadedModel(model, path, True, time.perf_counter() - start)
