"""The built-in catalog of reference architectures: configs only, no weights.

Each entry holds the keys of the model's Hugging Face ``config.json`` that decide its size
(the source of every figure is cited in ``docs/models.md``); total and active parameters
are computed from those shapes by :func:`count_params`, one function for every family, and
the catalog's tests check them against the totals the model cards publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvm_chat.engines.architecture import Architecture

QK_NORM_FAMILIES = frozenset({"qwen3", "qwen3_moe", "gemma3", "gemma3_text"})
"""Families with a per-head RMSNorm on queries and keys (``head_dim`` weights each)."""
SANDWICH_NORM_FAMILIES = frozenset({"gemma3", "gemma3_text"})
"""Families with four RMSNorms per layer (before and after attention and FFN), not two."""


@dataclass(frozen=True, slots=True)
class ParamCount:
    """Parameters of a transformer, and how they split between shared weights and experts."""

    total: int
    active: int
    expert: int
    """Parameters of one expert in one layer (0 for a dense model)."""


def count_params(config: Mapping[str, Any]) -> ParamCount:
    """Total and active parameters from a Hugging Face ``config.json``'s shapes.

    Counted: token embeddings; per layer the q/k/v/o projections (with q/k norms where the
    family has them), the gated FFN (gate, up and down) or, for a MoE model, every
    expert's gated FFN plus the router, and the layer's RMSNorms; the final norm; the LM
    head unless it is tied to the embeddings. Active parameters count only the
    ``num_experts_per_tok`` experts a token is routed to.
    """
    text = _text_config(config)
    family = str(text.get("model_type", ""))
    hidden = int(text["hidden_size"])
    layers = int(text["num_hidden_layers"])
    heads = int(text["num_attention_heads"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    vocab = int(text["vocab_size"])
    experts = _experts(text)
    per_token = int(text.get("num_experts_per_tok") or 0) if experts else 0
    ffn_width = int(text.get("moe_intermediate_size") or text["intermediate_size"])

    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if family in QK_NORM_FAMILIES:
        attention += 2 * head_dim
    norms = (4 if family in SANDWICH_NORM_FAMILIES else 2) * hidden
    ffn = 3 * hidden * ffn_width
    if experts:
        router = hidden * experts
        layer_total = attention + norms + experts * ffn + router
        layer_active = attention + norms + per_token * ffn + router
    else:
        layer_total = layer_active = attention + norms + ffn
    embeddings = vocab * hidden
    head = 0 if text.get("tie_word_embeddings", config.get("tie_word_embeddings")) else embeddings
    outside = embeddings + head + hidden
    return ParamCount(
        total=outside + layers * layer_total,
        active=outside + layers * layer_active,
        expert=ffn if experts else 0,
    )


def from_config(
    name: str, config: Mapping[str, Any], source: str = "", quantization: str = "bf16"
) -> Architecture:
    """An :class:`Architecture` from a Hugging Face ``config.json`` (multimodal: its text part)."""
    text = _text_config(config)
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    experts = _experts(text)
    counted = count_params(config)
    tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    return Architecture(
        name=name,
        architecture=str(text.get("model_type") or config.get("model_type") or "unknown"),
        layers=int(text["num_hidden_layers"]),
        hidden_size=hidden,
        intermediate_size=int(text.get("moe_intermediate_size") or text["intermediate_size"]),
        attention_heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        vocab_size=int(text["vocab_size"]),
        context_length=int(text.get("max_position_embeddings") or 0),
        total_params=counted.total,
        active_params=counted.active,
        experts=experts,
        experts_per_token=int(text.get("num_experts_per_tok") or 0) if experts else 0,
        quantization=quantization,
        tied_embeddings=bool(tied),
        source=source,
    )


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def _experts(text: Mapping[str, Any]) -> int:
    experts = int(text.get("num_local_experts") or text.get("num_experts") or 0)
    return experts if experts > 1 else 0


@dataclass(frozen=True, slots=True)
class Reference:
    """One catalog entry: the config keys, where they come from, and the published sizes."""

    name: str
    hf_id: str
    """The Hugging Face repository SGLang loads (``--model-path``)."""
    config: Mapping[str, Any]
    published_total: float
    """Total parameters as the model card states them."""
    published_active: float
    """Active parameters per token as the model card states them (= total when dense)."""

    @property
    def config_url(self) -> str:
        return f"https://huggingface.co/{self.hf_id}/blob/main/config.json"

    @property
    def architecture(self) -> Architecture:
        return from_config(self.name, self.config, source=self.config_url)


# Only the keys that decide the size; values exactly as each model's config.json has them.
_REFERENCES = (
    Reference(
        "smollm2-135m",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        {
            "model_type": "llama",
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "head_dim": 64,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": True,
        },
        135e6,
        135e6,
    ),
    Reference(
        "smollm3-3b",
        "HuggingFaceTB/SmolLM3-3B",
        {
            "model_type": "smollm3",
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "vocab_size": 128256,
            "max_position_embeddings": 65536,
            "tie_word_embeddings": True,
        },
        3.08e9,
        3.08e9,
    ),
    Reference(
        "phi-4-mini",
        "microsoft/Phi-4-mini-instruct",
        {
            "model_type": "phi3",
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "num_hidden_layers": 32,
            "num_attention_heads": 24,
            "num_key_value_heads": 8,
            "vocab_size": 200064,
            "max_position_embeddings": 131072,
            "tie_word_embeddings": True,
        },
        3.8e9,
        3.8e9,
    ),
    Reference(
        "phi-4",
        "microsoft/phi-4",
        {
            "model_type": "phi3",
            "hidden_size": 5120,
            "intermediate_size": 17920,
            "num_hidden_layers": 40,
            "num_attention_heads": 40,
            "num_key_value_heads": 10,
            "vocab_size": 100352,
            "max_position_embeddings": 16384,
            "tie_word_embeddings": False,
        },
        14.7e9,
        14.7e9,
    ),
    Reference(
        "gemma-3-27b",
        "google/gemma-3-27b-it",
        {
            "model_type": "gemma3",
            "text_config": {
                "model_type": "gemma3_text",
                "hidden_size": 5376,
                "intermediate_size": 21504,
                "num_hidden_layers": 62,
                "num_attention_heads": 32,
                "num_key_value_heads": 16,
                "head_dim": 128,
                "vocab_size": 262208,
                "max_position_embeddings": 131072,
                "tie_word_embeddings": True,
            },
        },
        27e9,
        27e9,
    ),
    Reference(
        "mixtral-8x7b",
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        {
            "model_type": "mixtral",
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "vocab_size": 32000,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": False,
        },
        46.7e9,
        12.9e9,
    ),
    Reference(
        "mixtral-8x22b",
        "mistralai/Mixtral-8x22B-Instruct-v0.1",
        {
            "model_type": "mixtral",
            "hidden_size": 6144,
            "intermediate_size": 16384,
            "num_hidden_layers": 56,
            "num_attention_heads": 48,
            "num_key_value_heads": 8,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "vocab_size": 32768,
            "max_position_embeddings": 65536,
            "tie_word_embeddings": False,
        },
        141e9,
        39e9,
    ),
    Reference(
        "qwen3-30b-a3b",
        "Qwen/Qwen3-30B-A3B",
        {
            "model_type": "qwen3_moe",
            "hidden_size": 2048,
            "moe_intermediate_size": 768,
            "intermediate_size": 6144,
            "num_hidden_layers": 48,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "vocab_size": 151936,
            "max_position_embeddings": 40960,
            "tie_word_embeddings": False,
        },
        30.5e9,
        3.3e9,
    ),
)

REFERENCES: dict[str, Reference] = {ref.name: ref for ref in _REFERENCES}
"""Catalog entries by name (lower case)."""
REFERENCE: dict[str, Architecture] = {ref.name: ref.architecture for ref in _REFERENCES}
"""The reference architectures by name (lower case)."""


def reference(name: str) -> Architecture | None:
    """The reference architecture called ``name`` (case-insensitive), or None."""
    return REFERENCE.get(name.strip().lower())


def names() -> list[str]:
    """The catalog's names, in catalog order."""
    return list(REFERENCE)


def model_path(spec: str) -> str:
    """What SGLang's ``--model-path`` should be for ``spec``: the Hugging Face id of a catalog
    model, the folder of a ``config.json``, or the path itself."""
    entry = REFERENCES.get(spec.strip().lower())
    if entry is not None:
        return entry.hf_id
    path = Path(spec).expanduser()
    return str(path.parent) if path.name == "config.json" else str(path)
