"""The ledger arithmetic: Decimal, never float."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import msgspec

from mvm_chat.engines.base import Usage
from mvm_chat.ledger.ledger import CallRecord, price
from mvm_chat.ledger.pricing import call_cost, show, time_cost, token_cost
from mvm_chat.settings import ModelSettings, RoutingSettings, Settings, TierSettings

API = ModelSettings(
    name="frontier",
    tier="api",
    engine="openai",
    base_url="http://x/v1",
    price_input_per_mtok=Decimal("2.50"),
    price_output_per_mtok=Decimal("10.00"),
)
LOCAL = ModelSettings(
    name="small",
    tier="local",
    engine="llamacpp",
    path="builtin:smollm2-135m",
    cpu_hour_usd=Decimal("0.036"),
)


def test_token_cost() -> None:
    assert token_cost(API, 1_000_000, 0) == Decimal("2.50")
    assert token_cost(API, 41, 17) == Decimal("0.000272500")
    assert show(token_cost(API, 41, 17)) == "0.000272"


def test_time_cost_for_local_and_gpu() -> None:
    assert call_cost(LOCAL, 100, 100, 3600.0) == Decimal("0.036")
    assert time_cost(Decimal("2.50"), 1.44) == Decimal("0.001")


def test_baseline_prices_the_same_tokens_on_the_baseline_model() -> None:
    settings = Settings(
        tiers=[TierSettings(name="local"), TierSettings(name="api")],
        models=[LOCAL, API],
        routing=RoutingSettings(baseline_model="frontier"),
    )
    call = CallRecord(
        request_id="r",
        attempt=0,
        tenant_id="t",
        api_key_id=None,
        conversation_id="c",
        model=LOCAL,
        usage=Usage(41, 17),
        latency_s=0.5,
        ttft_s=0.1,
    )
    cost, baseline = price(settings, call)
    assert cost == Decimal("0.000005000")
    assert baseline == Decimal("0.000272500")
    hit_cost, hit_baseline = price(settings, replace(call, cache="hit"))
    assert hit_cost == 0 and hit_baseline == baseline


def test_gpu_time_is_shared_among_the_running_requests() -> None:
    gpu = ModelSettings(
        name="gpu", tier="gpu", engine="sglang", base_url="http://x", gpu_hour_usd=Decimal("3.6")
    )
    two_gpus = msgspec.structs.replace(gpu, gpus=2)
    assert call_cost(gpu, 10, 10, 1.0) == Decimal("0.001")
    assert call_cost(two_gpus, 10, 10, 1.0) == Decimal("0.002")
    assert call_cost(two_gpus, 10, 10, 1.0, running_requests=4) == Decimal("0.0005")
    assert call_cost(two_gpus, 10, 10, 1.0, running_requests=3) == Decimal("0.000666667")
    assert call_cost(two_gpus, 10, 10, 1.0, running_requests=0) == Decimal("0.002")
