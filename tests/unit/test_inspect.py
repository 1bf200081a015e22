"""``architecture_of``: GGUF files (the tiny MoE, SmolLM2), config.json files, the catalog."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mvm_chat.engines.architecture import Architecture
from mvm_chat.engines.inspect import UnreadableSource, architecture_of, catalog_match
from tests import tiny_moe

SMOLLM2_VOCAB = 49152

# Mixtral-8x7B-Instruct-v0.1's config.json (huggingface.co/mistralai), the keys that matter.
MIXTRAL_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Architecture]:
    folder = tmp_path_factory.mktemp("tiny-moe")
    # without the tokenizer: its 98k strings take the gguf package seconds to read
    path = tiny_moe.write_tiny_moe(folder / "tiny-moe.gguf", tokenizer=False)
    return path, architecture_of(str(path))


def _tiny_counts() -> tuple[int, int]:
    """Total and active parameters of the tiny MoE, from the dimensions it was written with."""
    t = tiny_moe
    hidden, ffn = t.HIDDEN, t.FFN
    attention = 2 * hidden * t.HEADS * t.HEAD_DIM + 2 * hidden * t.KV_HEADS * t.HEAD_DIM
    shared_per_layer = attention + 2 * hidden + t.EXPERTS * hidden  # norms and the router
    one_expert = 3 * hidden * ffn
    outside = 2 * SMOLLM2_VOCAB * hidden + hidden  # embeddings, untied output, final norm
    total = outside + t.LAYERS * (shared_per_layer + t.EXPERTS * one_expert)
    active = outside + t.LAYERS * (shared_per_layer + t.EXPERTS_PER_TOKEN * one_expert)
    return total, active


def test_tiny_moe_reports_its_experts_and_exact_active_parameters(
    tiny: tuple[Path, Architecture],
) -> None:
    path, arch = tiny
    total, active = _tiny_counts()
    written = sum(math.prod(s) for s in tiny_moe.tensor_shapes(SMOLLM2_VOCAB).values())
    assert written == total, "the formula counts every tensor the file holds"
    assert (arch.experts, arch.experts_per_token, arch.is_moe) == (8, 2, True)
    assert (arch.total_params, arch.active_params) == (total, active)
    assert arch.active_params < arch.total_params
    assert arch.architecture == "llama" and arch.name == "tiny-moe"
    assert (arch.layers, arch.hidden_size, arch.intermediate_size) == (2, 64, 128)
    assert (arch.attention_heads, arch.kv_heads, arch.head_dim) == (4, 2, 16)
    assert (arch.vocab_size, arch.context_length) == (SMOLLM2_VOCAB, 512)
    assert arch.quantization == "F32" and not arch.tied_embeddings
    assert arch.file_bytes == path.stat().st_size
    assert arch.kv_bytes_per_token("bf16") == 2 * 2 * 16 * 2 * 2
    assert arch.kv_bytes_per_token("fp8") == 2 * 2 * 16 * 2


def test_split_gguf_counts_every_shard(tmp_path: Path) -> None:
    first = tiny_moe.write_tiny_moe(tmp_path / "tiny.gguf", split_max_tensors=10, tokenizer=False)
    shards = sorted(tmp_path.glob("tiny-*-of-00003.gguf"))
    assert first == shards[0] and len(shards) == 3
    arch = architecture_of(str(shards[-1]))  # the metadata is in the first shard
    assert (arch.total_params, arch.active_params) == _tiny_counts()
    assert arch.file_bytes == sum(s.stat().st_size for s in shards)
    shards[1].unlink()
    with pytest.raises(UnreadableSource, match=r"tiny-00002-of-00003\.gguf: a shard of"):
        architecture_of(str(shards[-1]))


def test_smollm2_builtin_gguf() -> None:
    arch = architecture_of("builtin:smollm2-135m")
    assert (arch.layers, arch.kv_heads, arch.head_dim, arch.attention_heads) == (30, 3, 64, 9)
    assert (arch.hidden_size, arch.vocab_size, arch.context_length) == (576, SMOLLM2_VOCAB, 8192)
    assert arch.total_params == arch.active_params
    assert arch.total_params == pytest.approx(135e6, rel=0.01)
    assert not arch.is_moe and arch.experts == 0 and arch.tied_embeddings
    assert arch.quantization == "Q4_1" and arch.file_bytes and arch.file_bytes > 50_000_000
    assert arch.kv_bytes_per_token() == 30 * 3 * 64 * 2 * 2


def test_mixtral_config_json_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(MIXTRAL_CONFIG))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 24)
    for source in (tmp_path / "config.json", tmp_path):
        arch = architecture_of(str(source))
        assert arch.total_params == pytest.approx(46.7e9, rel=0.005)
        assert arch.active_params == pytest.approx(12.9e9, rel=0.005)
        assert (arch.experts, arch.experts_per_token, arch.layers) == (8, 2, 32)
        assert (arch.kv_heads, arch.head_dim, arch.architecture) == (8, 128, "mixtral")
        assert arch.kv_bytes_per_token() == 128 * 1024
        assert arch.quantization == "bf16" and arch.file_bytes == 1024
        assert arch.source == str(tmp_path / "config.json")
        json_keys = arch.as_json()
        for key in ("architecture", "layers", "experts", "experts_per_token", "total_params"):
            assert key in json_keys
        assert json_keys["active_params"] == arch.active_params
        assert json_keys["kv_bytes_per_token"] == 131072


def test_config_quantisation_and_omitted_defaults(tmp_path: Path) -> None:
    fp8 = {**MIXTRAL_CONFIG, "quantization_config": {"quant_method": "fp8"}}
    (tmp_path / "config.json").write_text(json.dumps(fp8))
    arch = architecture_of(str(tmp_path / "config.json"))
    assert arch.quantization == "fp8" and arch.file_bytes is None

    awq = {**MIXTRAL_CONFIG, "quantization_config": {"quant_method": "awq", "bits": 4}}
    (tmp_path / "config.json").write_text(json.dumps(awq))
    assert architecture_of(str(tmp_path)).quantization == "awq-int4"

    # Gemma 3's multimodal config.json: the text part leaves vocab, context and ties to defaults.
    gemma = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 5376,
            "intermediate_size": 21504,
            "num_hidden_layers": 62,
            "num_attention_heads": 32,
            "num_key_value_heads": 16,
            "head_dim": 128,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(gemma))
    arch = architecture_of(str(tmp_path))
    assert (arch.vocab_size, arch.context_length, arch.tied_embeddings) == (262208, 131072, True)
    assert arch.total_params == pytest.approx(27e9, rel=0.05) and not arch.is_moe


def test_catalog_names_and_repository_ids() -> None:
    arch = architecture_of("Mixtral-8x7B")
    assert arch.experts == 8 and arch.total_params == pytest.approx(46.7e9, rel=0.005)
    matched = catalog_match("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert matched is not None and matched.name == "mixtral-8x7b"
    variant = catalog_match("someone/Qwen3-30B-A3B-Instruct-2507-FP8")
    assert variant is not None and variant.name == "qwen3-30b-a3b"
    assert catalog_match("someone/Mixtral-8x7B-Finetuned") is None
    assert catalog_match("nobody/unknown-model") is None


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "absent.gguf", "no such file, and not a catalog model"),
        (lambda d: d, "a folder without a config.json"),
        (lambda d: _write(d / "notes.txt", "plain text"), "not a JSON file"),
        (lambda d: _write(d / "config.json", '{"model_type": "x"}'), "lacks 'hidden_size'"),
        (lambda d: _write(d / "bad.gguf", "GGUF\x03\x00"), "cannot read its GGUF header"),
        (lambda d: "builtin:nonexistent", "unknown builtin model"),
        (lambda d: "http://127.0.0.1:9", "unreachable"),
    ],
)
def test_unreadable_sources_name_themselves(tmp_path: Path, make: Any, says: str) -> None:
    source = str(make(tmp_path))
    with pytest.raises(UnreadableSource) as caught:
        architecture_of(source)
    assert says in caught.value.detail
    if not source.startswith("builtin:"):
        assert source in caught.value.detail


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
