"""Step 2 of a turn: every registered classifier runs; the most confident prediction wins."""

from __future__ import annotations

from mvm_chat.chat.components import Component, Components
from mvm_chat.types import IntentPrediction, Turn


def _rank(component: Component, order: list[str]) -> int:
    for i, name in enumerate(order):
        if name in (component.name, component.plugin):
            return i
    return len(order)


async def classify(components: Components, turn: Turn, order: list[str]) -> IntentPrediction | None:
    """The most confident prediction; a tie goes to the classifier listed first in ``order``
    (then to registration order). A classifier that raises or returns garbage is skipped."""
    classifiers = components.of("intent_classifier")
    results = await components.call_all(classifiers, "classify", turn)
    best: tuple[float, int, int] | None = None
    winner: IntentPrediction | None = None
    for position, (component, prediction) in enumerate(zip(classifiers, results, strict=True)):
        if not isinstance(prediction, IntentPrediction):
            continue
        if not prediction.source:
            prediction = IntentPrediction(prediction.label, prediction.confidence, component.name)
        key = (float(prediction.confidence), -_rank(component, order), -position)
        if best is None or key > best:
            best, winner = key, prediction
    return winner
