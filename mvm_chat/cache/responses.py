"""The exact response cache: keyed on the model and the whole prompt (conversation state)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from mvm_chat.engines.base import GenerationRequest, Usage


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class Served:
    """An answer a turn already has for its call, and the ledger's ``cache`` value for it:
    ``hit`` (the exact cache) or ``semantic``."""

    cache: str
    answer: CachedAnswer


def response_key(tenant_id: str, model: str, request: GenerationRequest) -> str:
    """A key covering the tenant, the model, every prompt message and the sampling settings."""
    payload = json.dumps(
        [
            tenant_id,
            model,
            [[m.role, m.content] for m in request.messages],
            request.max_tokens,
            request.temperature,
            request.stop,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "resp:" + hashlib.sha256(payload.encode()).hexdigest()


def encode(answer: CachedAnswer) -> bytes:
    return json.dumps(
        {"t": answer.text, "p": answer.usage.prompt_tokens, "c": answer.usage.completion_tokens}
    ).encode()


def decode(raw: bytes) -> CachedAnswer | None:
    try:
        data = json.loads(raw)
        return CachedAnswer(str(data["t"]), Usage(int(data["p"]), int(data["c"])))
    except (ValueError, KeyError, TypeError):
        return None
