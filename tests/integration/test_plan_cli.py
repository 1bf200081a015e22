"""``mvm-chat plan`` end to end, and the planner's estimate in ``mvm-chat eval routing``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from mvm_chat.engines.base import ChatMessage, estimate_tokens
from mvm_chat.ledger.estimates import self_hosted_estimate
from mvm_chat.settings import load_settings
from tests.support import mvm


def test_mixtral_fp8_on_one_h100_as_json(tmp_path: Path) -> None:
    result = mvm(
        tmp_path,
        "plan",
        "--model",
        "mixtral-8x7b",
        "--gpu",
        "h100-80gb",
        "--quant",
        "fp8",
        "--gpu-hour-usd",
        "2.50",
        "--concurrency",
        "16",
        "--json",
    )
    data = json.loads(result.stdout)
    assert data["fits"] is True and data["min_gpus"] == 1
    assert data["weights_bytes"] == pytest.approx(46.7e9, rel=0.05)
    assert data["kv_bytes_per_token"] == 131072
    assert data["decode_tokens_per_s_batch1"] == pytest.approx(3.35e12 / 12.9e9, rel=0.10)
    assert data["max_concurrent_sequences"] >= 16
    assert data["decode_tokens_per_s_at_concurrency"] > data["decode_tokens_per_s_batch1"]
    assert Decimal(data["usd_per_mtok"]) > 0
    command = data["sglang_command"]
    assert command.startswith("python -m sglang.launch_server --model-path mistralai/Mixtral-8x7B")
    assert "--ep-size" in command and "--quantization fp8" in command


def test_mixtral_bf16_on_one_h100_does_not_fit(tmp_path: Path) -> None:
    result = mvm(
        tmp_path,
        "plan",
        "--model",
        "mixtral-8x7b",
        "--gpu",
        "h100-80gb",
        "--quant",
        "bf16",
        "--gpus",
        "1",
    )
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert rows["fits"].startswith("NO")
    assert (
        "fewest GPUs" in result.stdout and result.stdout.split("fewest GPUs")[1].split()[0] == "2"
    )
    assert "--tp-size 1" in rows["sglang"]


@pytest.mark.parametrize(
    ("args", "option", "known"),
    [
        (("--model", "gpt-5", "--gpu", "h100-80gb"), "--model", "mixtral-8x7b"),
        (("--model", "phi-4", "--gpu", "tpu"), "--gpu", "h100-80gb"),
    ],
)
def test_unknown_names_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], option: str, known: str
) -> None:
    result = mvm(tmp_path, "plan", *args, check=False)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert option in line and known in line and "Traceback" not in result.stderr


CONFIG = """
[[tiers]]
name = "moe"
[[models]]
name = "mixtral"
tier = "moe"
engine = "sglang"
base_url = "http://127.0.0.1:9"
gpu_hour_usd = "2.50"
gpus = 2
architecture = "mixtral-8x7b"
gpu = "h100-80gb"
quant = "fp8"
metrics_interval_s = 0
[routing]
default_tier = "moe"
"""
TRAFFIC = "text\nWhere is my card?\nWhat is the exchange rate today?\nMy payment failed twice\n"


def test_eval_routing_prices_a_self_hosted_tier_with_the_planner(tmp_path: Path) -> None:
    (tmp_path / "mvm_chat.toml").write_text(CONFIG)
    (tmp_path / "traffic.csv").write_text(TRAFFIC)
    result = mvm(
        tmp_path,
        "eval",
        "routing",
        "--traffic",
        "traffic.csv",
        "--json",
        "--completion-tokens",
        "80",
    )
    report = json.loads(result.stdout)
    assert report["models"] == {"mixtral": 3}
    [model] = load_settings(tmp_path / "mvm_chat.toml", environ={}).models
    expected = Decimal(0)
    for text in TRAFFIC.splitlines()[1:]:
        prompt = estimate_tokens([ChatMessage("user", text)])
        estimate = self_hosted_estimate(model, prompt, 80, concurrency=1)
        assert estimate is not None and estimate > 0
        expected += estimate
    assert Decimal(report["cost_usd"]) == expected
