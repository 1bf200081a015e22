"""The SGLang stand-in's OpenAI-compatible routes: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get, post
from litestar.response import Response, Stream

from tests.sglang_standin_core import (
    CHAT_TYPES,
    StandIn,
    canned,
    error_body,
    frame,
    grammar_problem,
    invalid,
    json_body,
    new_rid,
    now,
    verify,
)
from tests.sglang_standin_text import Answer, logprob_of, pieces_of, render_chat, text_of

CONTENT_TYPE_PROBLEM = (
    "[{'loc': ['header', 'content-type'], 'msg': \"Unsupported Media Type: Only "
    "'application/json' is allowed\", 'type': 'value_error'}]"
)


def chat_sampling(body: dict[str, Any]) -> dict[str, Any]:
    """``ChatCompletionRequest.to_sampling_params``, for the keys the stand-in reads."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
    sampling: dict[str, Any] = {
        "temperature": 1.0 if temperature is None else temperature,
        "top_p": 1.0 if top_p is None else top_p,
        "max_new_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
        "stop": body.get("stop"),
        "regex": body.get("regex"),
        "ebnf": body.get("ebnf"),
    }
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        sampling["json_schema"] = json.dumps(schema)
    elif response_format.get("type") == "json_object":
        sampling["json_schema"] = '{"type": "object"}'
    return sampling


def usage_info(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }


def token_logprob(standin: StandIn, piece: str, top: int) -> dict[str, Any]:
    """One ``ChatCompletionTokenLogprob``; ``top`` alternatives, the token itself first."""
    logprob = logprob_of(piece, standin.control.logprob)
    alternatives = [
        {"token": token, "bytes": list(token.encode()), "logprob": logprob - rank}
        for rank, token in enumerate([piece, *(f"<alt{i}>" for i in range(1, top))][:top])
    ]
    return {
        "token": piece,
        "bytes": list(piece.encode()),
        "logprob": logprob,
        "top_logprobs": alternatives,
    }


def choice(
    delta: dict[str, Any],
    logprobs: dict[str, Any] | None = None,
    finish: str | None = None,
    matched: Any = None,
) -> dict[str, Any]:
    """A ``ChatCompletionResponseStreamChoice`` as pydantic dumps it (every field, nulls too)."""
    full = {"role": None, "content": None, "reasoning_content": None, "tool_calls": None, **delta}
    return {
        "index": 0,
        "delta": full,
        "logprobs": logprobs,
        "finish_reason": finish,
        "matched_stop": matched,
    }


def chat_routes(standin: StandIn, served: str) -> list[Any]:
    """The route handlers, over ``standin``; ``served`` is the served model name."""

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return invalid(CONTENT_TYPE_PROBLEM)
        body, error = await standin.read(request)
        if error is not None:
            return error
        replaced = await standin.before("chat")
        if replaced is not None:
            return replaced
        problem = type_problem_of_chat(body)
        if problem:
            return invalid(problem)
        messages: list[dict[str, Any]] = body["messages"]
        if not messages:
            return error_body("Messages cannot be empty.")
        sampling = chat_sampling(body)
        stream = bool(body.get("stream"))
        problem = verify(sampling)
        if problem:
            return error_stream(problem) if stream else error_body(problem)
        prompt_tokens = len(pieces_of(render_chat(messages)))
        users = [m for m in messages if m["role"] == "user"]
        hint = text_of(users[-1].get("content")) if users else ""
        grammar = grammar_problem(sampling)
        if grammar and not stream:
            return error_body(grammar)
        if grammar:  # the scheduler aborts the request; the stream ends with "abort"
            result = Answer([], {"type": "abort", "message": grammar, "status_code": 400})
        else:
            try:
                result = canned(standin, hint, sampling, prompt_tokens)
            except ValueError as exc:
                return error_body(str(exc), "InternalServerError", 500)
        model = body.get("model") or "default"
        logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        if not stream:
            body = response(model, result, prompt_tokens, logprobs, top)
            return await standin.whole("chat", body, len(result.pieces))
        options = body.get("stream_options") or {}

        async def frames() -> AsyncIterator[bytes]:
            rid, created = new_rid(), now()

            def chunk(choices: list[Any], usage: Any = None) -> bytes:
                return frame(
                    {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": choices,
                        "usage": usage,
                    }
                )

            yield chunk([choice({"role": "assistant", "content": ""})])
            for n, piece in enumerate(result.pieces, 1):
                lp = {"content": [token_logprob(standin, piece, top)]} if logprobs else None
                usage = (
                    usage_info(prompt_tokens, n) if options.get("continuous_usage_stats") else None
                )
                yield chunk([choice({"content": piece}, lp)], usage)
            finish = result.finish
            yield chunk([choice({}, None, finish["type"], finish.get("matched"))])
            if options.get("include_usage"):
                yield chunk([], usage_info(prompt_tokens, len(result.pieces)))
            yield b"data: [DONE]\n\n"

        return Stream(standin.frames("chat", frames()), media_type="text/event-stream")

    def response(
        model: str, result: Answer, prompt_tokens: int, logprobs: bool, top: int
    ) -> dict[str, Any]:
        content = [token_logprob(standin, p, top) for p in result.pieces]
        message = {"role": "assistant", "content": result.text}
        return {
            "id": new_rid(),
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {**message, "reasoning_content": None, "tool_calls": None},
                    "logprobs": {"content": content} if logprobs else None,
                    "finish_reason": result.finish["type"],
                    "matched_stop": result.finish.get("matched"),
                }
            ],
            "usage": usage_info(prompt_tokens, len(result.pieces)),
            "metadata": None,
        }

    @get("/v1/models")
    async def models() -> Response[Any]:
        card = {
            "id": served,
            "object": "model",
            "created": now(),
            "owned_by": "sglang",
            "root": served,
            "parent": None,
            "max_model_len": standin.args.context_length,
        }
        return json_body({"object": "list", "data": [card]})

    return [chat, models]


def type_problem_of_chat(body: Any) -> str:
    """What pydantic would reject in a ``ChatCompletionRequest`` (the checks the stand-in makes)."""
    from tests.sglang_standin_core import type_problem

    problem = type_problem(body, CHAT_TYPES)
    if problem:
        return problem
    if "messages" not in body:
        return "messages: Field required"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in body["messages"]):
        return "messages: Input should be a valid dictionary or object with a role"
    return ""


def error_stream(message: str) -> Response[Any]:
    """A ``ValueError`` raised before the first token of a stream: an error event, then done."""
    error = {"object": "error", "message": message, "type": "BadRequestError", "param": None}
    body = frame({"error": {**error, "code": 400}}) + b"data: [DONE]\n\n"
    return Response(body, media_type="text/event-stream")
