"""Registers the built-in engine kinds: ``llamacpp``, ``openai`` and ``sglang``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mvm_chat import hookimpl
from mvm_chat.settings import ModelSettings


def _llamacpp(config: ModelSettings) -> Any:
    from mvm_chat.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(config)


def _openai(config: ModelSettings) -> Any:
    from mvm_chat.engines.openai import OpenAIEngine

    return OpenAIEngine(config)


def _sglang(config: ModelSettings) -> Any:
    from mvm_chat.engines.sglang import SglangEngine

    return SglangEngine(config)


@hookimpl(trylast=True)
def register_engines(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("llamacpp", _llamacpp)
    register("openai", _openai)
    register("sglang", _sglang)
