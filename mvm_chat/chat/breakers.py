"""A circuit breaker per model: open after N consecutive failures, half-open after a cool-down.

closed: calls go through. open: the router skips the model until ``cooldown_s`` has passed.
half_open: one trial call goes through; success closes the breaker, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    failures_to_open: int = 3
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self.clock() - self.opened_at < self.cooldown_s:
            return OPEN
        return HALF_OPEN

    def available(self) -> bool:
        """Whether the router may send a call now (in half-open, only while no trial runs)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.trial_running)

    def begin(self) -> None:
        """A call starts; in half-open it is the trial."""
        if self.state == HALF_OPEN:
            self.trial_running = True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial_running = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self.trial_running = False
        if self.state == HALF_OPEN or self.failures >= self.failures_to_open:
            self.opened_at = self.clock()


@dataclass(slots=True)
class Breakers:
    """The breakers of every model of an app, made on first use."""

    failures_to_open: int = 3
    cooldown_s: float = 30.0
    by_model: dict[str, CircuitBreaker] = field(default_factory=dict)

    def of(self, model: str) -> CircuitBreaker:
        if model not in self.by_model:
            self.by_model[model] = CircuitBreaker(self.failures_to_open, self.cooldown_s)
        return self.by_model[model]

    def available(self, model: str) -> bool:
        return self.of(model).available()

    def states(self) -> dict[str, str]:
        return {name: breaker.state for name, breaker in self.by_model.items()}
