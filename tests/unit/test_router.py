"""The router: default tier, sticky escalation and stepping down, breakers, capacity bursts."""

from __future__ import annotations

from mvm_chat.chat.breakers import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from mvm_chat.chat.router import Load, RoutingState, auto_route, fallback
from mvm_chat.settings import ModelSettings, RoutingSettings, Settings, TierSettings

LOCAL = ModelSettings(
    name="small",
    tier="local",
    engine="llamacpp",
    path="builtin:smollm2-135m",
    max_queue=2,
    slo_ms=1000,
)
GPU = ModelSettings(name="big", tier="gpu", engine="openai", base_url="http://x/v1")
API = ModelSettings(name="frontier", tier="api", engine="openai", base_url="http://y/v1")
SETTINGS = Settings(
    tiers=[TierSettings(name=n) for n in ("local", "gpu", "api", "human")],
    models=[LOCAL, GPU, API],
    routing=RoutingSettings(calm_turns_to_step_down=2),
)


def load(down: tuple[str, ...] = (), depth: int = 0, wait_s: float = 0.0) -> Load:
    return Load(
        available=lambda m: m.name not in down,
        queue_depth=lambda m: depth if m is LOCAL else 0,
        predicted_wait_s=lambda m: wait_s if m is LOCAL else 0.0,
    )


def test_default_tier_when_nothing_else_applies() -> None:
    route, moves, state = auto_route(SETTINGS, RoutingState(), None, load())
    assert (route.model, moves, state) == (LOCAL, [], RoutingState())


def test_sticky_until_calm_or_intent_change() -> None:
    stuck = RoutingState("api", 1, "dispute")
    route, moves, _ = auto_route(SETTINGS, stuck, "dispute", load())
    assert route.model is API and moves == [("local", "api", "sticky: escalated earlier")]

    route, moves, state = auto_route(SETTINGS, RoutingState("api", 2, "dispute"), None, load())
    assert route.model is LOCAL and moves == [("api", "local", "de-escalation: 2 calm turns")]
    assert state == RoutingState()

    route, moves, _ = auto_route(SETTINGS, stuck, "card_arrival", load())
    assert route.model is LOCAL and moves[0][2] == "de-escalation: the intent changed"


def test_state_after_turn() -> None:
    assert RoutingState().after_turn("api", "dispute") == RoutingState("api", 0, "dispute")
    assert RoutingState("api", 0, "d").after_turn(None, "d") == RoutingState("api", 1, "d")
    assert RoutingState().after_turn(None, "x") == RoutingState()
    restored = RoutingState.from_metadata({"routing": RoutingState("gpu", 1, "x").as_metadata()})
    assert restored == RoutingState("gpu", 1, "x")


def test_open_breaker_skips_a_tier() -> None:
    route, moves, _ = auto_route(SETTINGS, RoutingState(), None, load(down=("small",)))
    assert route.model is GPU and moves == [("local", "gpu", "unavailable: local")]
    route, moves, _ = auto_route(
        SETTINGS, RoutingState("api", 0, None), None, load(down=("frontier",))
    )
    assert route.model is GPU, "nothing available above: the nearest one below"


def test_capacity_bursts_one_tier_up() -> None:
    route, moves, _ = auto_route(SETTINGS, RoutingState(), None, load(depth=3))
    assert route.model is GPU and moves == [("local", "gpu", "capacity: queue 3 > 2")]
    route, moves, _ = auto_route(SETTINGS, RoutingState(), None, load(wait_s=1.5))
    assert moves[0][2] == "capacity: predicted wait 1500 ms > 1000 ms"
    route, _, _ = auto_route(SETTINGS, RoutingState(), None, load(depth=3, down=("big",)))
    assert route.model is API


def test_fallback_goes_up_then_down_then_nowhere() -> None:
    assert fallback(SETTINGS, LOCAL, load()) is GPU
    assert fallback(SETTINGS, GPU, load(down=("frontier",))) is LOCAL
    assert fallback(SETTINGS, API, load(down=("small", "big"))) is None


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures_to_open=2, cooldown_s=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.state == CLOSED and breaker.available()
    breaker.failed()
    assert breaker.state == OPEN and not breaker.available()
    now[0] = 11
    assert breaker.state == HALF_OPEN and breaker.available()
    breaker.begin()
    assert not breaker.available(), "one trial at a time"
    breaker.failed()
    assert breaker.state == OPEN
    now[0] = 22
    breaker.begin()
    breaker.succeeded()
    assert breaker.state == CLOSED and breaker.failures == 0
