"""``mvm-chat eval routing``: replayed traffic, routed only and generated."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import mvm

CONFIG = """
[[tiers]]
name = "local"
[[tiers]]
name = "api"

[[models]]
name = "smollm2-135m"
tier = "local"
engine = "llamacpp"
path = "builtin:smollm2-135m"
max_tokens = 16

[[models]]
name = "frontier"
tier = "api"
engine = "openai"
base_url = "http://127.0.0.1:9/v1"
price_input_per_mtok = "2.50"
price_output_per_mtok = "10.00"
connect_timeout_s = 0.5

[routing]
baseline_model = "frontier"
[routing.intent_floors]
refund = "api"

[plugins.keyword_intents.rules]
refund = ["refund"]
card_arrival = ["where is my card"]
"""
TRAFFIC = (
    "text,category\n"
    "I want a refund for my order,refund\n"
    "Where is my card?,card_arrival\n"
    "Can I talk to a human?,x\n"
    "What is the exchange rate?,exchange_rate\n"
)


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "mvm_chat.toml").write_text(CONFIG)
    (tmp_path / "traffic.csv").write_text(TRAFFIC)
    return tmp_path


def test_routing_only(tmp_path: Path) -> None:
    result = mvm(_setup(tmp_path), "eval", "routing", "--traffic", "traffic.csv", "--json")
    report = json.loads(result.stdout)
    assert report["messages"] == 4 and report["generated"] is False
    assert {t: r["count"] for t, r in report["tiers"].items()} == {"local": 2, "api": 1, "human": 1}
    assert report["escalation_reasons"] == {
        "intent floor for refund": 1,
        "user asked for a person": 1,
    }
    assert report["local_share"] == 0.5
    assert 0 < float(report["cost_usd"]) < float(report["baseline_cost_usd"])


def test_routing_with_generation_falls_back_and_hands_off(tmp_path: Path) -> None:
    result = mvm(
        _setup(tmp_path),
        "eval",
        "routing",
        "--traffic",
        "traffic.csv",
        "--generate",
        "--limit",
        "3",
        "--json",
    )
    report = json.loads(result.stdout)
    assert report["generated"] is True and report["messages"] == 3
    assert report["models"] == {"smollm2-135m": 2, "human": 1}
    reasons = report["escalation_reasons"]
    assert reasons["intent floor for refund"] == 1
    assert any(r.startswith("error: model frontier: upstream unreachable") for r in reasons)
    assert float(report["cost_usd"]) == 0, "failed calls are free"
    assert float(report["baseline_cost_usd"]) > 0


def test_unreadable_traffic_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    result = mvm(tmp_path, "eval", "routing", "--traffic", "empty.csv", check=False)
    assert result.returncode == 2 and "empty" in result.stderr.strip().splitlines()[-1]


def test_models_command_lists_tiers_engines_and_health(tmp_path: Path) -> None:
    rows = json.loads(mvm(_setup(tmp_path), "models", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert (by_name["smollm2-135m"]["tier"], by_name["smollm2-135m"]["healthy"]) == ("local", True)
    assert by_name["smollm2-135m"]["info"]["architecture"] == "llama"
    assert (by_name["frontier"]["engine"], by_name["frontier"]["healthy"]) == ("openai", False)
