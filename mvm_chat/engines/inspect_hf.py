"""A Hugging Face ``config.json``'s architecture; parameters are counted from its shapes by the
catalog's :func:`~mvm_chat.engines.catalog.count_params`, one count for every source."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from mvm_chat.engines.architecture import Architecture
from mvm_chat.engines.catalog import from_config

DTYPES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "float32": "fp32",
    "float8_e4m3fn": "fp8",
}
"""``torch_dtype`` names, as the quantisation they mean."""

TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
        "head_dim": 256,
        "tie_word_embeddings": True,
    },
}
"""Keys that transformers' config classes default and a ``config.json`` may leave out, by family
(Gemma 3's multimodal checkpoints omit these from their ``text_config``)."""

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class ConfigUnreadable(ValueError):
    """The file is not a model ``config.json``, or lacks a size-deciding key."""


def config_architecture(path: Path, source: str = "") -> Architecture:
    """Read ``path`` (a ``config.json``); raises :class:`ConfigUnreadable`."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigUnreadable(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigUnreadable(f"{path}: not a JSON object")
    config = _with_defaults(config)
    text = config.get("text_config", config)
    for key in _REQUIRED:
        if not text.get(key):
            raise ConfigUnreadable(f"{path} lacks {key!r}: not a transformer config.json")
    if not (text.get("intermediate_size") or text.get("moe_intermediate_size")):
        raise ConfigUnreadable(f"{path} lacks 'intermediate_size'")
    name = str(config.get("_name_or_path") or path.parent.name or path.stem)
    try:
        arch = from_config(name, config, source or str(path), quantization(config))
    except (TypeError, ValueError) as exc:
        raise ConfigUnreadable(f"{path}: a size-deciding key is not a number ({exc})") from None
    weights = [f for pattern in WEIGHT_FILES for f in path.parent.glob(pattern) if f.is_file()]
    return replace(arch, file_bytes=sum(f.stat().st_size for f in weights) if weights else None)


def quantization(config: Mapping[str, Any]) -> str:
    """``quantization_config``'s method (with its bit width), else the weights' dtype; ``bf16``
    when the config says neither."""
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method") or "quantized").lower()
        bits = quant.get("bits") or quant.get("w_bit")
        if method == "bitsandbytes":
            bits = 4 if quant.get("load_in_4bit") else 8 if quant.get("load_in_8bit") else None
        return f"{method}-int{bits}" if isinstance(bits, int) else method
    text = config.get("text_config")
    scopes = [text, config] if isinstance(text, Mapping) else [config]
    for scope in scopes:
        dtype = scope.get("torch_dtype") or scope.get("dtype")
        if dtype:
            return DTYPES.get(str(dtype), str(dtype))
    return "bf16"


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    if not isinstance(text, dict):
        return {**TEXT_DEFAULTS.get(str(config.get("model_type")), {}), **config}
    family = str(text.get("model_type") or f"{config.get('model_type')}_text")
    return {**config, "text_config": {**TEXT_DEFAULTS.get(family, {}), **text}}
