"""The reference catalog: configs, parameters counted from shapes, against published figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvm_chat.engines import catalog
from mvm_chat.engines.catalog import REFERENCES, count_params, from_config, reference
from mvm_chat.engines.inspect import UnreadableSource
from mvm_chat.engines.inspect import architecture_of as resolve
from mvm_chat.engines.llamacpp import resolve_model_path

ISSUE_MODELS = {
    "smollm2-135m",
    "smollm3-3b",
    "phi-4-mini",
    "phi-4",
    "gemma-3-27b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "qwen3-30b-a3b",
}


def test_catalog_holds_the_issue_models() -> None:
    assert set(catalog.REFERENCE) == ISSUE_MODELS == set(catalog.names())


@pytest.mark.parametrize("name", sorted(ISSUE_MODELS))
def test_counted_parameters_match_the_published_ones(name: str) -> None:
    entry = REFERENCES[name]
    arch = entry.architecture
    assert arch.total_params == pytest.approx(entry.published_total, rel=0.05)
    assert arch.active_params == pytest.approx(entry.published_active, rel=0.05)
    assert arch.active_params <= arch.total_params
    assert arch.is_moe == (arch.experts > 0) == (arch.active_params < arch.total_params)


def test_mixtral_8x7b_figures() -> None:
    arch = reference("Mixtral-8x7B")
    assert arch is not None
    assert arch.total_params == pytest.approx(46.7e9, rel=0.05)
    assert arch.active_params == pytest.approx(12.9e9, rel=0.05)
    assert (arch.experts, arch.experts_per_token) == (8, 2)
    # 32 layers x 8 KV heads x 128 x (K and V) x 2 bytes
    assert arch.kv_bytes_per_token("bf16") == 131072 == 128 * 1024
    assert arch.kv_bytes_per_token("fp8") == 65536


def test_smollm2_135m_figures() -> None:
    arch = reference("smollm2-135m")
    assert arch is not None
    assert (arch.layers, arch.kv_heads, arch.head_dim) == (30, 3, 64)
    assert (arch.attention_heads, arch.hidden_size, arch.vocab_size) == (9, 576, 49152)
    assert arch.tied_embeddings and not arch.is_moe


def test_catalog_count_agrees_with_the_real_smollm2_gguf_tensors() -> None:
    """The shipped SmolLM2 GGUF's tensor shapes (read through :func:`resolve`) give the same
    total as the catalog's config (reading the GGUF takes seconds: done once)."""
    path = resolve_model_path("builtin:smollm2-135m")
    gguf_arch = resolve(str(path))
    arch = reference("smollm2-135m")
    assert arch is not None
    assert gguf_arch.total_params == arch.total_params
    assert (gguf_arch.layers, gguf_arch.kv_heads, gguf_arch.head_dim) == (30, 3, 64)
    assert gguf_arch.source == str(path)


def test_count_params_by_hand_for_a_small_moe() -> None:
    config = {
        "model_type": "mixtral",
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 10,
        "tie_word_embeddings": False,
    }
    head_dim = 2
    attention = 8 * 4 * head_dim * 2 + 8 * 2 * head_dim * 2  # q, o and k, v
    expert = 3 * 8 * 16
    router, norms = 8 * 4, 2 * 8
    outside = 10 * 8 * 2 + 8  # embeddings, LM head, final norm
    counted = count_params(config)
    assert counted.total == outside + 2 * (attention + norms + 4 * expert + router)
    assert counted.active == outside + 2 * (attention + norms + 2 * expert + router)
    assert counted.expert == expert
    tied = count_params({**config, "tie_word_embeddings": True})
    assert counted.total - tied.total == 10 * 8


def test_families_with_extra_norms_count_them() -> None:
    base = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "vocab_size": 5,
        "tie_word_embeddings": True,
    }
    llama = count_params({**base, "model_type": "llama"}).total
    qwen3 = count_params({**base, "model_type": "qwen3"}).total
    gemma3 = count_params({"model_type": "gemma3", "text_config": {**base, "model_type": "gemma3"}})
    assert qwen3 - llama == 3 * 2 * 8  # q and k norms of head size, per layer
    assert gemma3.total - llama == 3 * (2 * 8 + 2 * 16)  # plus two more layer norms


def test_resolve_reads_a_config_json_file_or_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my-mixtral"
    folder.mkdir()
    config = dict(REFERENCES["mixtral-8x7b"].config)
    (folder / "config.json").write_text(json.dumps(config))
    by_folder, by_file = resolve(str(folder)), resolve(str(folder / "config.json"))
    assert by_folder == by_file
    assert by_file.name == "my-mixtral" and by_file.source == str(folder / "config.json")
    assert by_file.total_params == REFERENCES["mixtral-8x7b"].architecture.total_params
    assert catalog.model_path(str(folder / "config.json")) == str(folder)
    assert catalog.model_path("mixtral-8x7b") == "mistralai/Mixtral-8x7B-Instruct-v0.1"


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "not a JSON file"), ('{"hidden_size": 8}', "not a transformer config.json")],
)
def test_resolve_explains_a_bad_config(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(UnreadableSource, match=problem):
        resolve(str(tmp_path / "config.json"))


def test_unknown_names() -> None:
    assert reference("gpt-5") is None
    with pytest.raises(UnreadableSource, match="mixtral-8x7b"):
        resolve("gpt-5")


def test_from_config_reads_the_text_part_of_a_multimodal_config() -> None:
    arch = from_config("gemma", REFERENCES["gemma-3-27b"].config)
    assert (arch.layers, arch.kv_heads, arch.head_dim, arch.architecture) == (
        62,
        16,
        128,
        "gemma3_text",
    )
