"""The OpenAI chat-completions wire format as a client reads it: stream chunks, deltas with
token log-probabilities, and HTTP failures in words. Shared by the ``openai`` and ``sglang``
engines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from mvm_chat import redaction
from mvm_chat.engines.base import TokenDelta, Usage
from mvm_chat.errors import EngineError


def parse_chunk(data: str, name: str) -> dict[str, Any]:
    """One ``data:`` line of the stream as a JSON object; anything else is an error."""
    try:
        chunk = msgspec.json.decode(data)  # about 4 times json.loads' speed
    except msgspec.DecodeError:
        try:  # NaN and Infinity, which Python's json writes and reads, and msgspec refuses
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise EngineError(f"model {name}: upstream sent a malformed stream chunk") from None
    if not isinstance(chunk, dict):
        raise EngineError(f"model {name}: upstream sent a malformed stream chunk")
    if "error" in chunk:
        raise EngineError(f"model {name}: upstream reported an error mid-stream")
    return chunk


def usage_of(raw: Any) -> Usage:
    """The ``usage`` object of a chunk or body."""
    try:
        return Usage(int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0)))
    except (AttributeError, TypeError, ValueError):
        return Usage()


def choices_of(chunk: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """A stream chunk's ``choices`` (the usage chunk has none); a malformed list is an error."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise EngineError(f"model {name}: upstream sent a malformed stream chunk")
    return choices


def delta_of(choice: dict[str, Any], name: str) -> TokenDelta | None:
    """The new text of a streamed choice with its tokens' logprobs; None when it brings none
    (the role chunk, the last chunk with the finish reason)."""
    delta = choice.get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    if not text:
        return None
    if not isinstance(text, str):
        raise EngineError(f"model {name}: upstream sent a malformed stream chunk")
    logprobs = token_logprobs(choice.get("logprobs"))
    return TokenDelta(text, max(1, len(logprobs)), logprobs)


def token_logprobs(raw: Any) -> tuple[float, ...]:
    """``logprobs.content[].logprob`` of an OpenAI-style choice; none when absent or odd."""
    try:
        return tuple(float(item["logprob"]) for item in raw["content"])
    except (KeyError, TypeError, ValueError):
        return ()


def checked(name: str, choices: Sequence[str], text: str, finish: str) -> str:
    """``finish`` when the answer is usable: not aborted, and one of ``choices`` if any."""
    if finish == "abort":
        raise EngineError(f"model {name}: the server aborted the generation")
    if choices and text not in choices:
        raise EngineError(f"model {name}: the answer is not one of the choices")
    return finish


def transport_error(name: str, exc: httpx.HTTPError) -> EngineError:
    """A failed connection, in words: timed out, unreachable, or cut."""
    if isinstance(exc, httpx.TimeoutException):
        return EngineError(f"model {name}: upstream timed out")
    if isinstance(exc, httpx.ConnectError):
        return EngineError(f"model {name}: upstream unreachable ({type(exc).__name__})")
    return EngineError(f"model {name}: upstream connection failed ({type(exc).__name__})")


def status_problem(name: str, response: httpx.Response) -> str:
    """An HTTP error in words; for a 4xx, with SGLang's message (``{"error": {"message"}}``
    from native routes, ``{"message"}`` from the OpenAI adapter)."""
    status = response.status_code
    if status == 429:
        return f"model {name}: upstream is overloaded (HTTP 429)"
    if status >= 500:
        return f"model {name}: upstream failed (HTTP {status})"
    message = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        found = (inner if isinstance(inner, dict) else data).get("message")
        # an upstream may echo the key it was sent ("Incorrect API key provided: sk-...")
        message = redaction.scrub(found)[:200] if isinstance(found, str) else ""
    return f"model {name}: upstream rejected the request (HTTP {status})" + (
        f": {message}" if message else ""
    )
