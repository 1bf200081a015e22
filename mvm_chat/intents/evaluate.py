"""Score an intent classifier on labelled rows: accuracy, macro-F1, out-of-scope detection, latency.

A classifier is anything with ``classify(turn)`` returning an
:class:`~mvm_chat.IntentPrediction` or ``None`` (sync or async). ``None`` means the classifier
recognised nothing, and counts as an :data:`~mvm_chat.intents.dataset.OUT_OF_SCOPE` prediction.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mvm_chat.intents.dataset import OUT_OF_SCOPE, LabelledText, normalise_label
from mvm_chat.types import IntentPrediction, Turn


class IntentClassifier(Protocol):
    """What :func:`evaluate` needs of a classifier."""

    def classify(self, turn: Turn, /) -> Any:
        """An IntentPrediction or None, or an awaitable of one."""


@dataclass(frozen=True, slots=True)
class Confusion:
    """How often rows of label ``true`` were classified as ``predicted``."""

    true: str
    predicted: str
    count: int


@dataclass(slots=True)
class IntentReport:
    """The figures of one evaluation; rates are fractions in [0, 1], latencies milliseconds.

    ``oos_recall`` and ``oos_precision`` are None when the test rows have no out-of-scope row.
    """

    n_test: int
    n_in_scope: int
    n_oos: int
    accuracy: float
    macro_f1: float
    oos_recall: float | None
    oos_precision: float | None
    p50_ms: float
    p99_ms: float
    confused: list[Confusion] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _macro_f1(pairs: Sequence[tuple[str, str]], labels: set[str]) -> float:
    """Mean F1 over ``labels``; a row of any true label predicted as one of them is counted."""
    if not labels:
        return 0.0
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for true, predicted in pairs:
        if true == predicted:
            tp[true] += 1
        else:
            fp[predicted] += 1
            fn[true] += 1
    scores = [2 * tp[x] / (2 * tp[x] + fp[x] + fn[x]) if tp[x] else 0.0 for x in labels]
    return sum(scores) / len(scores)


def score(
    pairs: Sequence[tuple[str, str]], latencies_ms: Sequence[float], top_confused: int = 10
) -> IntentReport:
    """The report for ``(true, predicted)`` label pairs and per-row latencies."""
    in_scope = [(t, p) for t, p in pairs if t != OUT_OF_SCOPE]
    n_oos = len(pairs) - len(in_scope)
    oos_recall = oos_precision = None
    if n_oos:
        hits = sum(1 for t, p in pairs if t == OUT_OF_SCOPE and p == OUT_OF_SCOPE)
        flagged = sum(1 for _, p in pairs if p == OUT_OF_SCOPE)
        oos_recall = hits / n_oos
        oos_precision = hits / flagged if flagged else 0.0
    mistakes = Counter((t, p) for t, p in pairs if t != p)
    return IntentReport(
        n_test=len(pairs),
        n_in_scope=len(in_scope),
        n_oos=n_oos,
        accuracy=sum(1 for t, p in in_scope if t == p) / len(in_scope) if in_scope else 0.0,
        macro_f1=_macro_f1(pairs, {t for t, _ in in_scope}),
        oos_recall=oos_recall,
        oos_precision=oos_precision,
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        confused=[Confusion(t, p, n) for (t, p), n in mistakes.most_common(top_confused)],
    )


async def _predict(classifier: IntentClassifier, text: str) -> IntentPrediction | None:
    outcome = classifier.classify(Turn(text=text, conversation_id="eval", tenant="eval"))
    if inspect.isawaitable(outcome):
        outcome = await outcome
    if outcome is not None and not isinstance(outcome, IntentPrediction):
        raise TypeError(f"classify returned {type(outcome).__name__}, not IntentPrediction")
    return outcome


async def evaluate(
    classifier: IntentClassifier, rows: Sequence[LabelledText], top_confused: int = 10
) -> IntentReport:
    """Classify every row one at a time, timing each call, and score the predictions.

    One untimed call on the first row comes first, so that lazy set-up is not counted as latency.
    """
    if rows:
        await _predict(classifier, rows[0].text)
    pairs: list[tuple[str, str]] = []
    latencies: list[float] = []
    for row in rows:
        start = time.perf_counter()
        prediction = await _predict(classifier, row.text)
        latencies.append((time.perf_counter() - start) * 1000)
        predicted = normalise_label(prediction.label) if prediction else OUT_OF_SCOPE
        pairs.append((row.label, predicted))
    return score(pairs, latencies, top_confused)
