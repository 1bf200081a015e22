"""Prometheus metrics of one app instance (its own registry: no module-global state)."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Counters and histograms for requests, turns, tokens, cost, cache and plugins."""

    def __init__(self) -> None:
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
        self.turns.labels(model, tier).inc()
        self.tokens.labels(model, tier, "prompt").inc(prompt_tokens)
        self.tokens.labels(model, tier, "completion").inc(completion_tokens)
        self.cost.labels(model, tier).inc(float(cost_usd))
        self.baseline_cost.inc(float(baseline_usd))

    def render(self) -> bytes:
        return generate_latest(self.registry)
