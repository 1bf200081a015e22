"""What a model is made of: the figures that decide memory, KV cache and decode speed.

One :class:`Architecture` comes from a GGUF file, a Hugging Face ``config.json``, an SGLang
server's ``/model_info`` (see ``inspect.py``) or the built-in reference catalog
(``catalog.py``); the capacity planner (``planner.py``) reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KV_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
"""Bytes per KV-cache element, by KV dtype."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Architecture:
    """A transformer's shape and parameter counts. A dense model has ``experts == 0``."""

    name: str
    architecture: str
    """The family as its source names it: ``llama``, ``mixtral``, ``qwen3_moe``, ``gemma3``..."""
    layers: int
    hidden_size: int
    intermediate_size: int
    """The FFN width: of the dense FFN, or of one expert in a MoE model."""
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    total_params: int
    active_params: int
    """Parameters read per token: shared weights plus the ``experts_per_token`` experts."""
    experts: int = 0
    experts_per_token: int = 0
    quantization: str = "bf16"
    """The weights' storage as found (``bf16``, ``Q4_1``, ``fp8``...)."""
    file_bytes: int | None = None
    tied_embeddings: bool = False
    source: str = ""
    """Where the figures come from: a file path, a URL, or the catalog's citation."""

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    def kv_bytes_per_token(self, kv_dtype: str = "bf16") -> int:
        """KV-cache bytes one token takes: layers x KV heads x head size x (K and V) x dtype."""
        return self.layers * self.kv_heads * self.head_dim * 2 * KV_DTYPE_BYTES[kv_dtype]

    def as_json(self, kv_dtype: str = "bf16") -> dict[str, Any]:
        """The JSON of ``mvm-chat models inspect --json``."""
        return {
            **asdict(self),
            "moe": self.is_moe,
            "kv_dtype": kv_dtype,
            "kv_bytes_per_token": self.kv_bytes_per_token(kv_dtype),
        }
