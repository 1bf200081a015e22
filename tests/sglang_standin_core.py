"""The SGLang stand-in's state, scripted faults, and the response and validation helpers its
routes share (see ``tests/sglang_standin.py`` for the protocol it follows)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from litestar import Request
from litestar.response import Response, Stream

from tests.sglang_standin_text import Answer, answer, logprob_of, pieces_of, token_id

SAMPLING_KEYS = {
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k",
    "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens",
    "n", "json_schema", "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens",
    "spaces_between_special_tokens", "no_stop_trim", "custom_params", "stream_interval",
    "logit_bias", "sampling_seed",
}  # fmt: skip
GENERATE_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str, list),
    "input_ids": (list,),
    "sampling_params": (dict, list),
    "return_logprob": (bool, list),
    "logprob_start_len": (int, list),
    "top_logprobs_num": (int, list),
    "return_text_in_logprobs": (bool,),
    "stream": (bool,),
    "rid": (str, list),
}
CHAT_TYPES: dict[str, tuple[type, ...]] = {
    "messages": (list,),
    "model": (str,),
    "logprobs": (bool,),
    "top_logprobs": (int,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "stream": (bool,),
    "stream_options": (dict,),
    "temperature": (int, float),
    "top_p": (int, float),
    "stop": (str, list),
    "regex": (str,),
    "ebnf": (str,),
    "response_format": (dict,),
}


@dataclass
class Control:
    """What the test scripted: faults per route and the load /metrics reports."""

    faults: dict[str, str] = field(default_factory=dict)
    num_queue_reqs: int = 0
    num_running_reqs: int = 0
    token_usage: float = 0.0
    gen_throughput: float = 0.0
    health_delay_s: float = 1.0
    token_delay_s: float = 0.0
    logprob: float | None = None
    hold_stop: bool = False
    """Keep ``/stop_expert_distribution_record`` waiting while true."""


class StandIn:
    """The server's state: control, the requests seen, live streams, and the hang latch."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.control = Control()
        self.requests: list[dict[str, Any]] = []
        self.live = 0
        self.counters = {"sglang:prompt_tokens_total": 0.0, "sglang:generation_tokens_total": 0.0}
        self.release = asyncio.Event()
        self.forward_hooks: list[Callable[[int, int], None]] = []
        """Called with (prompt tokens, completion tokens) of every request served."""

    def reset(self) -> None:
        self.release.set()
        self.release = asyncio.Event()
        self.control = Control()
        self.requests.clear()

    async def read(self, request: Request[Any, Any, Any]) -> tuple[Any, Response[Any] | None]:
        """The JSON body (recorded for ``/_standin/requests``), or FastAPI's 400 for bad JSON."""
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return None, invalid(f"JSON decode error: {exc}")
        self.requests.append({"path": request.url.path, "body": body})
        del self.requests[:-100]
        return body, None

    def fault(self, route: str) -> str:
        return self.control.faults.get(route, "")

    async def hang(self) -> None:
        await self.release.wait()

    async def before(self, route: str) -> Response[Any] | None:
        """The scripted answer that replaces the real one, if any."""
        fault = self.fault(route)
        if fault == "hang":
            await self.hang()
            return Response(b"", status_code=503)
        if fault.startswith("status:"):
            status = HTTPStatus(int(fault.removeprefix("status:")))
            if route == "health":
                return Response(b"", status_code=status)
            return error_body(status.phrase, status.phrase, status)
        if fault == "garbage":
            return Response(b"<html>upstream broke</html>", media_type="application/json")
        return None

    async def whole(self, route: str, body: Any, tokens: int = 0) -> Response[Any]:
        """A JSON answer, sent when its ``tokens`` are generated (``token_delay_s`` each, the
        request running meanwhile, as SGLang answers a request that is not streamed); with a
        ``truncate`` or ``drop`` fault, cut short like a stream."""
        if tokens and self.control.token_delay_s:
            self.live += 1
            try:
                await asyncio.sleep(tokens * self.control.token_delay_s)
            finally:
                self.live -= 1
        if self.fault(route) not in ("truncate", "drop", "stall"):
            return json_body(body)
        data = json.dumps(body).encode()
        third = len(data) // 3

        async def parts() -> AsyncIterator[bytes]:
            for start in (0, third, 2 * third):
                yield data[start : start + third]

        return Stream(self.frames(route, parts()), media_type="application/json")

    async def frames(self, route: str, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``frames`` as sent, with the route's stream fault (if any) after two of them."""
        fault = self.fault(route)
        self.live += 1
        try:
            sent = 0
            async for frame in frames:
                if sent == 2 and fault in ("truncate", "drop", "stall"):
                    if fault == "drop":
                        raise ConnectionAbortedError("the stand-in cut the stream")
                    if fault == "stall":
                        await self.hang()
                    return
                if sent == 1 and fault == "garbage_chunk":
                    yield b'data: {"choices": [{"delta": \n\n'
                yield frame
                sent += 1
                if self.control.token_delay_s:
                    await asyncio.sleep(self.control.token_delay_s)
        finally:
            self.live -= 1


def json_body(body: Any, status: int = 200) -> Response[Any]:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        status_code=status,
        media_type="application/json",
    )


def error_body(message: str, kind: str = "BadRequestError", status: int = 400) -> Response[Any]:
    """SGLang's ``ErrorResponse`` (the OpenAI adapter, and validation failures)."""
    error = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return json_body(error, status)


def invalid(message: str) -> Response[Any]:
    """A body that fails validation: FastAPI's 400, as SGLang's handler reshapes it."""
    return error_body(message, "Bad Request")


def native_error(message: str) -> Response[Any]:
    """A ``ValueError`` on a native route: ``_create_error_response``."""
    return json_body({"error": {"message": message}}, 400)


def frame(body: Any) -> bytes:
    return (
        b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


def type_problem(body: Any, types: dict[str, tuple[type, ...]]) -> str:
    if not isinstance(body, dict):
        return "Input should be a valid dictionary or object"
    for key, allowed in types.items():
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in allowed:
            return f"{key}: Input should be a valid {allowed[0].__name__}"
        if not isinstance(value, allowed):
            return f"{key}: Input should be a valid {allowed[0].__name__}"
    return ""


def verify(sampling: dict[str, Any]) -> str:
    """``SamplingParams.verify``'s errors (those the stand-in can meet)."""
    temperature = sampling.get("temperature", 1.0)
    if temperature is not None and temperature < 0:
        return f"temperature must be non-negative, got {temperature}."
    top_p = sampling.get("top_p", 1.0)
    if top_p is not None and not 0 < top_p <= 1:
        return f"top_p must be in (0, 1], got {top_p}."
    max_new = sampling.get("max_new_tokens")
    if max_new is not None and max_new < 0:
        return f"max_new_tokens must be at least 0, got {max_new}."
    if sum(sampling.get(k) is not None for k in ("json_schema", "regex", "ebnf")) > 1:
        return "Only one of regex, json_schema, or ebnf can be set."
    return ""


def grammar_problem(sampling: dict[str, Any]) -> str:
    regex = sampling.get("regex")
    try:
        if regex is not None:
            re.compile(regex)
        if sampling.get("json_schema") is not None:
            json.loads(sampling["json_schema"])
    except (re.error, ValueError, TypeError):
        key = "regex" if regex is not None else "json"
        value = regex if regex is not None else sampling["json_schema"]
        return f"Invalid grammar request: key=({key!r}, {value!r})"
    return ""


def canned(standin: StandIn, hint: str, sampling: dict[str, Any], prompt_tokens: int) -> Answer:
    result = answer(hint, sampling)
    standin.counters["sglang:prompt_tokens_total"] += prompt_tokens
    standin.counters["sglang:generation_tokens_total"] += len(result.pieces)
    for hook in standin.forward_hooks:
        hook(prompt_tokens, len(result.pieces))
    return result


def new_rid() -> str:
    return uuid.uuid4().hex


def prompt_ids(text: str) -> list[int]:
    return [token_id(p) for p in pieces_of(text)] or [0]


def output_logprobs(standin: StandIn, pieces: list[str], with_text: bool) -> list[list[Any]]:
    return [
        [logprob_of(p, standin.control.logprob), token_id(p), p if with_text else None]
        for p in pieces
    ]


def now() -> int:
    return int(time.time())
