"""Prometheus metrics of one app instance (its own registry: no module-global state)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MAX_SERIES = 10_000
"""Labelled series :meth:`Metrics.series` keeps at hand; past that it looks each one up."""


class Metrics:
    """Counters and histograms for requests, turns, tokens, cost, cache and plugins."""

    def __init__(self) -> None:
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mvm_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "mvm_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turns = Counter("mvm_turns", "Chat turns answered", ["model", "tier"], registry=r)
        self.tokens = Counter(
            "mvm_tokens", "Tokens processed", ["model", "tier", "kind"], registry=r
        )
        self.cost = Counter("mvm_cost_usd", "Cost of model calls", ["model", "tier"], registry=r)
        self.baseline_cost = Counter(
            "mvm_baseline_cost_usd", "What the baseline model would have cost", registry=r
        )
        self.escalations = Counter(
            "mvm_escalations", "Escalations and routing moves", ["reason"], registry=r
        )
        self.cache = Counter("mvm_cache_results", "Response cache results", ["result"], registry=r)
        self.plugin_errors = Counter(
            "mvm_plugin_errors", "Errors raised by plugins", ["plugin"], registry=r
        )
        self.engine_errors = Counter(
            "mvm_engine_errors", "Failed model calls", ["model", "tier"], registry=r
        )

    def record_turn(
        self,
        model: str,
        tier: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: Decimal,
        baseline_usd: Decimal,
    ) -> None:
        self.series(self.turns, model, tier).inc()
        self.series(self.tokens, model, tier, "prompt").inc(prompt_tokens)
        self.series(self.tokens, model, tier, "completion").inc(completion_tokens)
        self.series(self.cost, model, tier).inc(float(cost_usd))
        self.baseline_cost.inc(float(baseline_usd))

    def series(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label values: the one way to reach
        a labelled series (prometheus_client's own lookup takes a lock and validates the
        values on every call)."""
        key = (id(metric), labels)
        found = self._series.get(key)
        if found is None:
            found = metric.labels(*labels)
            if len(self._series) < MAX_SERIES:  # some label values come from clients
                self._series[key] = found
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
