"""Scoring an intent classifier: accuracy, macro-F1, out-of-scope figures, latency percentiles."""

from __future__ import annotations

import pytest

from mvm_chat import IntentPrediction, Turn
from mvm_chat.intents.dataset import OUT_OF_SCOPE, LabelledText
from mvm_chat.intents.evaluate import Confusion, evaluate, percentile, score


def test_scores_in_scope_and_out_of_scope_rows() -> None:
    pairs = [
        ("a", "a"),
        ("a", "b"),
        ("b", "b"),
        ("b", OUT_OF_SCOPE),
        (OUT_OF_SCOPE, OUT_OF_SCOPE),
        (OUT_OF_SCOPE, "a"),
    ]

    report = score(pairs, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])

    assert (report.n_test, report.n_in_scope, report.n_oos) == (6, 4, 2)
    assert report.accuracy == 0.5
    # a: tp 1, fp 1 (the out-of-scope row), fn 1: F1 0.5; b: tp 1, fp 1, fn 1: F1 0.5
    assert report.macro_f1 == pytest.approx(0.5)
    assert report.oos_recall == 0.5
    assert report.oos_precision == 0.5
    assert report.p50_ms == 3.5
    assert report.p99_ms == pytest.approx(5.95)
    assert Confusion("a", "b", 1) in report.confused
    assert len(report.confused) == 3


def test_without_out_of_scope_rows_their_figures_are_none() -> None:
    report = score([("a", "a"), ("b", "a")], [1.0, 1.0])

    assert report.oos_recall is None
    assert report.oos_precision is None
    assert report.to_dict()["confused"] == [{"true": "b", "predicted": "a", "count": 1}]


def test_percentile_interpolates() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([4.0], 99) == 4.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)


class Echo:
    """Predicts the first word of the text; None (nothing recognised) for a question mark."""

    def __init__(self) -> None:
        self.calls = 0

    async def classify(self, turn: Turn) -> IntentPrediction | None:
        self.calls += 1
        if turn.text == "?":
            return None
        return IntentPrediction(turn.text.split()[0], 0.9, "echo")


async def test_evaluate_awaits_async_classifiers_and_reads_none_as_out_of_scope() -> None:
    rows = [
        LabelledText("a hello", "a", 2),
        LabelledText("b there", "a", 3),
        LabelledText("?", OUT_OF_SCOPE, 4),
        LabelledText("oos please", OUT_OF_SCOPE, 5),
    ]
    classifier = Echo()

    report = await evaluate(classifier, rows)

    assert classifier.calls == len(rows) + 1  # one untimed warm-up call
    assert report.accuracy == 0.5
    assert report.oos_recall == 1.0  # None and a predicted "oos" both count
    assert report.oos_precision == 1.0
    assert report.p50_ms >= 0.0


async def test_evaluate_refuses_a_wrong_return_type() -> None:
    class Wrong:
        def classify(self, turn: Turn) -> str:
            return "a"

    with pytest.raises(TypeError, match="not IntentPrediction"):
        await evaluate(Wrong(), [LabelledText("x", "a", 2)])
