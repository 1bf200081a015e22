"""The capacity planner against published figures, and its formulas one by one."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from mvm_chat.engines import planner
from mvm_chat.engines.architecture import Architecture
from mvm_chat.engines.catalog import REFERENCE
from mvm_chat.engines.gpus import GPUS, gpu
from mvm_chat.engines.planner import PlanError, PlanRequest, plan
from mvm_chat.errors import ConfigError
from mvm_chat.ledger.estimates import expected_cost, self_hosted_estimate
from mvm_chat.settings import ModelSettings, load_settings

MIXTRAL = REFERENCE["mixtral-8x7b"]
H100 = GPUS["h100-80gb"]


def request(name: str = "mixtral-8x7b", **kw: object) -> PlanRequest:
    return PlanRequest(architecture=REFERENCE[name], gpu=kw.pop("gpu", H100), **kw)  # type: ignore[arg-type]


def test_gpu_table_has_the_issue_gpus_with_sane_figures() -> None:
    assert {"h100-80gb", "h200", "a100-80gb", "l40s", "rtx-3090", "rtx-4090", "a10g"} <= set(GPUS)
    for card in GPUS.values():
        assert card.memory_bytes >= 24 * 10**9 and card.bandwidth_bytes_per_s > 5e11
        assert card.bf16_flops > 5e13
        assert card.fp8_flops is None or card.fp8_flops == pytest.approx(2 * card.bf16_flops, 0.02)
    assert H100.memory_bytes == 80 * 10**9 and H100.bandwidth_bytes_per_s == 3.35e12
    assert H100.fp8 and not GPUS["a100-80gb"].fp8
    assert GPUS["a100-80gb"].flops("fp8") == GPUS["a100-80gb"].bf16_flops
    assert gpu("H100") is H100 and gpu("nope") is None


def test_mixtral_fp8_on_one_h100() -> None:
    result = plan(request(quant="fp8"))
    assert result.fits and result.min_gpus == 1 and result.gpus == 1
    assert result.weights_bytes == pytest.approx(46.7e9, rel=0.05)
    assert result.kv_bytes_per_token == 131072
    # the issue's ceiling: 3.35e12 bytes/s over 12.9e9 active bytes, some 260 tokens/s
    assert result.decode_tokens_per_s_batch1 == pytest.approx(3.35e12 / 12.9e9, rel=0.10)
    assert "--ep-size 1" in result.sglang_command
    assert "--quantization fp8" in result.sglang_command


def test_mixtral_bf16_needs_two_h100s() -> None:
    one = plan(request(quant="bf16", gpus=1))
    assert not one.fits and one.min_gpus == 2 and one.max_concurrent_sequences == 0
    two = plan(request(quant="bf16"))
    assert two.fits and two.gpus == 2 and (two.tp_size, two.ep_size) == (2, 2)
    command = two.sglang_command
    for part in (
        "python -m sglang.launch_server --model-path mixtral-8x7b",
        "--tp-size 2",
        "--ep-size 2",
        "--context-length 4096",
        "--mem-fraction-static 0.88",
        "--enable-metrics",
        "--enable-eplb",
        "--expert-distribution-recorder-mode stat",
    ):
        assert part in command
    assert "--quantization" not in command


def test_kv_capacity_is_the_pool_over_one_sequence() -> None:
    req = request(quant="fp8", context=8192)
    result = plan(req)
    pool = math.floor(80e9 * 0.88) - result.weights_bytes
    assert result.kv_pool_bytes == pool
    assert result.max_concurrent_sequences == pool // (131072 * 8192)


def test_kv_heads_are_replicated_past_their_count() -> None:
    qwen = REFERENCE["qwen3-30b-a3b"]  # 4 KV heads
    assert planner.kv_bytes_per_token(qwen, "bf16", 4) == qwen.kv_bytes_per_token()
    assert planner.kv_bytes_per_token(qwen, "bf16", 8) == 2 * qwen.kv_bytes_per_token()


def test_tensor_parallel_sizes_must_split_the_heads() -> None:
    assert planner.tp_problem(REFERENCE["smollm2-135m"], 2) is not None  # 9 heads
    assert planner.tp_problem(REFERENCE["phi-4"], 4) is not None  # 10 KV heads
    assert planner.tp_problem(REFERENCE["phi-4"], 2) is None
    with pytest.raises(PlanError) as caught:
        plan(request("phi-4", gpus=4))
    assert caught.value.option == "--gpus" and "1, 2" in caught.value.problem


def test_experts_touched_grow_towards_all_experts() -> None:
    assert planner.experts_touched(MIXTRAL, 1) == pytest.approx(2)
    assert planner.experts_touched(MIXTRAL, 2) == pytest.approx(8 * (1 - 0.75**2))
    assert planner.experts_touched(MIXTRAL, 64) == pytest.approx(8, abs=1e-6)
    assert planner.experts_touched(REFERENCE["phi-4"], 64) == 0


def test_moe_weights_read_per_step_grow_with_the_batch() -> None:
    req = request(quant="bf16", context=1)
    kv = 131072
    one, many = planner.bytes_per_step(req, 2, 1), planner.bytes_per_step(req, 2, 64)
    assert one == pytest.approx(MIXTRAL.active_params * 2 + kv, rel=1e-9)
    assert many == pytest.approx(MIXTRAL.total_params * 2 + 64 * kv, rel=1e-6)
    dense = request("phi-4", context=1)
    weights = REFERENCE["phi-4"].total_params * 2
    assert planner.bytes_per_step(dense, 1, 8) == pytest.approx(weights + 8 * 204800)


def test_decode_rises_with_concurrency_up_to_the_compute_ceiling() -> None:
    req = request("phi-4", quant="fp8", context=128)
    ceiling = planner.compute_ceiling(req, 1)
    assert ceiling == pytest.approx(1979e12 / (2 * REFERENCE["phi-4"].active_params))
    speeds = [planner.decode_tokens_per_s(req, 1, b) for b in (1, 8, 64, 512, 2048)]
    assert speeds == sorted(speeds) and speeds[-1] == pytest.approx(ceiling)
    result = plan(req)
    batch = result.compute_bound_batch
    assert batch is not None and 1 < batch <= result.max_concurrent_sequences
    assert planner.decode_tokens_per_s(req, 1, batch) == pytest.approx(ceiling)
    assert planner.decode_tokens_per_s(req, 1, batch - 1) < ceiling


def test_long_contexts_never_reach_the_compute_bound() -> None:
    assert plan(request(quant="fp8", concurrency=32)).compute_bound_batch is None


def test_concurrency_is_capped_at_what_fits() -> None:
    result = plan(request(quant="fp8", concurrency=10_000))
    assert result.concurrency == result.max_concurrent_sequences
    assert result.decode_tokens_per_s_at_concurrency == pytest.approx(
        planner.decode_tokens_per_s(result.request, 1, result.concurrency)
    )


def test_usd_per_mtok_is_the_hourly_price_over_tokens_per_hour() -> None:
    result = plan(request(quant="fp8", concurrency=16, gpu_hour_usd=Decimal("2.50")))
    tps = result.decode_tokens_per_s_at_concurrency
    expected = Decimal("2.50") / 3600 / Decimal(repr(tps)) * 1_000_000
    assert result.usd_per_mtok == expected.quantize(Decimal("0.000001"))
    assert isinstance(result.as_json()["usd_per_mtok"], str)
    assert plan(request(quant="fp8")).as_json()["usd_per_mtok"] is None


def test_dense_models_have_no_expert_parallelism() -> None:
    result = plan(request("gemma-3-27b", gpu=GPUS["l40s"], quant="int4"))
    assert result.ep_size is None and "--ep-size" not in result.sglang_command
    assert "--torchao-config int4wo-128" in result.sglang_command
    assert "expert-distribution" not in result.sglang_command


def test_fp8_kv_cache_halves_the_kv_bytes() -> None:
    result = plan(request(quant="fp8", kv_dtype="fp8"))
    assert result.kv_bytes_per_token == 65536
    assert "--kv-cache-dtype fp8_e5m2" in result.sglang_command


def test_nothing_fits_is_said_not_raised() -> None:
    result = plan(request("mixtral-8x22b", gpu=GPUS["rtx-3090"]))
    assert not result.fits and result.min_gpus is None and result.gpus == 8


@pytest.mark.parametrize(
    ("kw", "option"),
    [
        ({"quant": "fp4"}, "--quant"),
        ({"kv_dtype": "int2"}, "--kv-dtype"),
        ({"gpus": 3}, "--gpus"),
        ({"context": 0}, "--context"),
        ({"concurrency": 0}, "--concurrency"),
        ({"gpu_hour_usd": Decimal(-1)}, "--gpu-hour-usd"),
        ({"mem_fraction": 1.5}, "--mem-fraction"),
    ],
)
def test_bad_requests_name_the_option(kw: dict[str, object], option: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan(request(**kw))
    assert caught.value.option == option


def test_plan_json_has_the_issue_keys() -> None:
    data = plan(request(quant="fp8")).as_json()
    for key in (
        "fits",
        "min_gpus",
        "weights_bytes",
        "kv_bytes_per_token",
        "max_concurrent_sequences",
        "decode_tokens_per_s_batch1",
        "decode_tokens_per_s_at_concurrency",
        "usd_per_mtok",
        "sglang_command",
    ):
        assert key in data


# -- estimates before measured traffic ---------------------------------------------------------


def sglang_model(**kw: object) -> ModelSettings:
    fields: dict[str, object] = {
        "name": "moe",
        "tier": "moe",
        "engine": "sglang",
        "gpu_hour_usd": Decimal("2.50"),
        "gpus": 2,
        "architecture": "mixtral-8x7b",
        "gpu": "h100-80gb",
        **kw,
    }
    return ModelSettings(**fields)  # type: ignore[arg-type]


def test_expected_cost_is_gpu_time_at_the_planned_speed() -> None:
    model = sglang_model()
    cost = expected_cost(model, MIXTRAL, H100, 200, 100, concurrency=8)
    req = PlanRequest(architecture=MIXTRAL, gpu=H100, gpus=2, context=300, concurrency=8)
    seconds = 100 / planner.decode_tokens_per_s(req, 2, 8) + 200 / planner.compute_ceiling(req, 2)
    assert float(cost) == pytest.approx(2.5 * 2 * seconds / 3600, abs=1e-9)
    assert cost == cost.quantize(Decimal("0.000000001"))
    busier = expected_cost(model, MIXTRAL, H100, 200, 100, concurrency=32)
    assert busier < cost  # more sequences share the same GPU time
    fp8 = expected_cost(sglang_model(quant="fp8"), MIXTRAL, H100, 200, 100, concurrency=1)
    assert fp8 < expected_cost(model, MIXTRAL, H100, 200, 100, concurrency=1)


def test_self_hosted_estimate_needs_an_sglang_model_with_hardware() -> None:
    assert self_hosted_estimate(sglang_model(), 100, 50) is not None
    assert self_hosted_estimate(sglang_model(architecture=""), 100, 50) is None
    assert self_hosted_estimate(sglang_model(gpu=""), 100, 50) is None
    assert self_hosted_estimate(sglang_model(engine="openai"), 100, 50) is None


# -- model settings naming the hardware ----------------------------------------------------------

CONFIG = """
[[tiers]]
name = "local"
[[models]]
name = "moe"
tier = "local"
engine = "sglang"
base_url = "http://127.0.0.1:9"
{extra}
"""


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('gpu = "tpu-v9"', "models[0].gpu", "h100-80gb"),
        ('architecture = "gpt-5"', "models[0].architecture", "mixtral-8x7b"),
        ('quant = "fp4"', "models[0].quant", "int4"),
        ('architecture = "phi-4"\ngpus = 4', "models[0].gpus", "KV heads"),
        ('architecture = "mixtral-8x7b"\ngpus = 16', "models[0].gpus", "1, 2, 4, 8"),
    ],
)
def test_bad_hardware_settings_name_the_key(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    path = tmp_path / "mvm_chat.toml"
    path.write_text(CONFIG.format(extra=extra))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key == key and problem in str(caught.value)


def test_hardware_settings_accept_names_and_config_paths(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    path = tmp_path / "mvm_chat.toml"
    for extra in (
        'architecture = "Mixtral-8x7B"\ngpu = "h100-80gb"\ngpus = 2\nquant = "fp8"',
        f'architecture = "{tmp_path / "config.json"}"\ngpu = "a10g"',
        f'architecture = "{tmp_path}"',
    ):
        path.write_text(CONFIG.format(extra=extra))
        assert load_settings(path, environ={}).models[0].architecture


def test_a_custom_architecture_plans_like_the_catalog() -> None:
    custom = Architecture(
        name="tiny",
        architecture="llama",
        layers=2,
        hidden_size=64,
        intermediate_size=128,
        attention_heads=4,
        kv_heads=2,
        head_dim=16,
        vocab_size=100,
        context_length=512,
        total_params=100_000,
        active_params=100_000,
    )
    result = plan(PlanRequest(architecture=custom, gpu=GPUS["a10g"], context=512))
    assert result.fits and result.gpus == 1 and "--model-path tiny" in result.sglang_command


def test_an_unreadable_architecture_gives_no_estimate(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    model = sglang_model(architecture=str(tmp_path / "config.json"))
    assert self_hosted_estimate(model, 100, 50) is None
