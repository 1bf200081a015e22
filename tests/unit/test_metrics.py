"""Metrics: labelled series are looked up once, and their number stays bounded."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import generate_latest

from mvm_chat import metrics as metrics_module
from mvm_chat.metrics import Metrics


def test_a_series_is_looked_up_once_and_counts_in_the_registry() -> None:
    metrics = Metrics()
    first = metrics.series(metrics.turns, "small", "local")
    assert metrics.series(metrics.turns, "small", "local") is first
    assert metrics.series(metrics.cost, "small", "local") is not first
    metrics.record_turn("small", "local", 3, 5, Decimal("0.5"), Decimal(1))
    first.inc()
    text = generate_latest(metrics.registry).decode()
    assert 'mvm_turns_total{model="small",tier="local"} 2.0' in text
    assert 'mvm_tokens_total{kind="completion",model="small",tier="local"} 5.0' in text


def test_series_past_the_bound_still_count_but_are_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module, "MAX_SERIES", 2)
    metrics = Metrics()
    for method in ("GET", "POST", "BREW", "BREW"):
        metrics.series(metrics.requests, "/v1/x", method, "200").inc()
    assert len(metrics._series) == 2
    text = generate_latest(metrics.registry).decode()
    assert 'mvm_http_requests_total{method="BREW",route="/v1/x",status="200"} 2.0' in text
