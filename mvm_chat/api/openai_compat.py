"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from litestar import Request, get, post
from litestar.types import ASGIApp

from mvm_chat.api.auth import principal_of
from mvm_chat.api.openapi import problems
from mvm_chat.api.schemas import ChatCompletionRequest, ModelCard, ModelList
from mvm_chat.api.turns import answer, begin_turn, error_frame, event_stream, json_reply, sse
from mvm_chat.chat.router import AUTO
from mvm_chat.chat.services import Services
from mvm_chat.chat.tenant_tiers import tenant_settings
from mvm_chat.chat.turns import Routed, TurnEvent, TurnRequest, TurnResult
from mvm_chat.engines.base import ChatMessage, TokenDelta
from mvm_chat.errors import InvalidInput


def _turn_request(request: Request[Any, Any, Any], data: ChatCompletionRequest) -> TurnRequest:
    last = data.messages[-1]
    if last.role != "user":
        raise InvalidInput(
            f"messages[{len(data.messages) - 1}].role", "the last message must be from the user"
        )
    prompt: list[ChatMessage] = []
    for i, message in enumerate(data.messages):
        text = message.text()
        if not text.strip() and message.role == "user":
            raise InvalidInput(f"messages[{i}].content", "must not be empty")
        role = "system" if message.role == "developer" else message.role
        prompt.append(ChatMessage(role, text))
    conversation_id = (data.metadata or {}).get("conversation_id") or request.headers.get(
        "x-conversation-id"
    )
    return TurnRequest(
        principal=principal_of(request),
        text=prompt[-1].content,
        request_id=request.state.request_id,
        conversation_id=conversation_id or None,
        model=data.model,
        prompt=prompt,
        max_tokens=data.max_completion_tokens or data.max_tokens,
        temperature=data.temperature,
        use_cache="no-cache" not in request.headers.get("cache-control", ""),
        streams=bool(data.stream),
    )


def _completion(result: TurnResult, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.message_id}",
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": _finish_reason(result.finish_reason),
            }
        ],
        "usage": _usage(result),
        "mvm": result.mvm(),
    }


def _usage(result: TurnResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": result.usage.prompt_tokens + result.usage.completion_tokens,
    }


def _finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


async def _chunks(
    events: AsyncGenerator[TurnEvent, None], chunk_id: str, created: int
) -> AsyncIterator[bytes]:
    model = ""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        body.update(extra)
        return sse(body)

    try:
        async with aclosing(events) as stream:
            async for event in stream:
                if isinstance(event, Routed):
                    model = event.model
                    yield chunk({"role": "assistant", "content": ""})
                elif isinstance(event, TokenDelta):
                    yield chunk({"content": event.text})
                else:
                    yield chunk(
                        {},
                        _finish_reason(event.finish_reason),
                        usage=_usage(event),
                        mvm=event.mvm(),
                    )
    except Exception as exc:
        failure = error_frame(exc)
        yield sse(
            {
                "error": {
                    "message": failure["detail"],
                    "type": "server_error",
                    "code": failure["code"],
                }
            }
        )
    yield sse("[DONE]")


@post(
    "/v1/chat/completions",
    status_code=200,
    summary="OpenAI-compatible chat completion",
    responses=problems(404, 409, 502),
)
async def chat_completions(
    request: Request[Any, Any, Any], data: ChatCompletionRequest, services: Services
) -> ASGIApp:
    """Answer with the minimum viable model (``model: "auto"``) or a named catalog model."""
    events, conversation_id = await begin_turn(request, services, _turn_request(request, data))
    created = int(time.time())
    headers = {"X-Conversation-Id": conversation_id}
    if data.stream:
        chunks = _chunks(events, f"chatcmpl-{request.state.request_id}", created)
        return event_stream(request, chunks, headers)
    result = await answer(events)
    return json_reply(_completion(result, created), headers)


@get("/v1/models", summary="The models this key may use, OpenAI shape")
async def list_models(request: Request[Any, Any, Any], services: Services) -> ModelList:
    """``auto`` and the catalog models on the tiers the caller's tenant may use."""
    settings = tenant_settings(services.settings, principal_of(request).tenant)
    cards = [ModelCard(id=AUTO, tier="", engine="router")]
    cards += [ModelCard(id=m.name, tier=m.tier, engine=m.engine) for m in settings.models]
    return ModelList(data=cards)
