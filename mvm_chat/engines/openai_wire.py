"""The OpenAI chat-completions wire format as a client reads it: stream chunks, deltas with
token log-probabilities, whole (not streamed) answers, and HTTP failures in words. Shared by
the ``openai`` and ``sglang`` engines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from mvm_chat import redaction
from mvm_chat.engines.base import ChatMessage, TokenDelta, Usage, estimate_tokens
from mvm_chat.errors import EngineError


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer of one call that was not streamed."""

    text: str
    logprobs: tuple[float, ...]
    """The natural-log probability of each generated token."""
    usage: Usage
    finish_reason: str


def _json(data: str | bytes) -> Any:
    """``data`` parsed as JSON; ``None`` when it is not JSON."""
    try:
        return msgspec.json.decode(data)  # about 4 times json.loads' speed
    except msgspec.DecodeError:
        try:  # NaN and Infinity, which Python's json writes and reads, and msgspec refuses
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


def parse_chunk(data: str, name: str) -> dict[str, Any]:
    """One ``data:`` line of the stream as a JSON object; anything else is an error."""
    chunk = _json(data)
    if not isinstance(chunk, dict):
        raise EngineError(f"model {name}: upstream sent a malformed stream chunk")
    if "error" in chunk:
        raise EngineError(f"model {name}: upstream reported an error mid-stream")
    return chunk


def parse_body(content: bytes, name: str) -> dict[str, Any]:
    """A 200 answer's body as a JSON object; anything else is an error."""
    data = _json(content)
    if data is None:
        raise EngineError(f"model {name}: upstream sent a body that is not JSON")
    if not isinstance(data, dict) or "error" in data:
        raise shape_error(name, "upstream")
    return data


def completion_of(data: dict[str, Any], name: str, prompt: list[ChatMessage]) -> Completion:
    """The first choice of a chat completion that was not streamed. Without ``usage``, the
    prompt is estimated at about 4 characters a token, and the answer counted by its tokens'
    logprobs, or estimated the same way."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError(text)
        finish = str(choice.get("finish_reason") or "stop")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise shape_error(name, "upstream") from None
    logprobs = token_logprobs(choice.get("logprobs"))
    raw_usage = data.get("usage")
    if raw_usage:
        usage = usage_of(raw_usage)
    else:
        usage = Usage(estimate_tokens(prompt), len(logprobs) or -(-len(text) // 4))
    return Completion(text, logprobs, usage, finish)


def shape_error(name: str, source: str) -> EngineError:
    """The error for an answer that parsed but has not the shape the protocol gives."""
    return EngineError(f"model {name}: {source} sent an answer of an unknown shape")


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
