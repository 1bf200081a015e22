"""The OpenAI wire format: stream chunks and whole bodies are JSON objects (Python's NaN and
Infinity too), anything else an engine error; a whole answer's text, logprobs and usage."""

from __future__ import annotations

import math

import pytest

from mvm_chat.engines.base import ChatMessage, Usage
from mvm_chat.engines.openai_wire import completion_of, parse_body, parse_chunk
from mvm_chat.errors import EngineError


def test_a_chunk_is_a_json_object() -> None:
    chunk = parse_chunk('{"choices": [{"delta": {"content": "h\\u00e9"}}], "n": 1.5}', "m")
    assert chunk == {"choices": [{"delta": {"content": "hé"}}], "n": 1.5}
    logprob = parse_chunk('{"logprob": -Infinity}', "m")["logprob"]
    assert math.isinf(logprob) and logprob < 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"a": ', "malformed"),
        ('{"error": {"message": "overloaded"}}', "reported an error"),
    ],
)
def test_anything_else_is_an_engine_error(data: str, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        parse_chunk(data, "m")


def _body(message: object, **extra: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "length"}], **extra}


def test_a_whole_answer_with_usage_and_logprobs() -> None:
    data = parse_body(
        b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},'
        b' "logprobs": {"content": [{"token": "Hi", "logprob": -0.5},'
        b' {"token": " there", "logprob": -0.25}]}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}',
        "m",
    )
    answer = completion_of(data, "m", [ChatMessage("user", "hello")])
    assert answer.text == "Hi there" and answer.logprobs == (-0.5, -0.25)
    assert answer.usage == Usage(9, 2) and answer.finish_reason == "stop"


def test_a_whole_answer_without_usage_is_estimated() -> None:
    prompt = [ChatMessage("user", "x" * 40)]
    answer = completion_of(_body({"content": "twelve chars"}), "m", prompt)
    assert answer.usage == Usage(12, 3) and answer.finish_reason == "length"
    assert completion_of(_body({"content": None}), "m", prompt).text == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>oops", "not JSON"),
        (b"[1]", "unknown shape"),
        (b'{"error": {"message": "overloaded"}}', "unknown shape"),
    ],
)
def test_a_body_that_is_not_an_answer_object_is_an_engine_error(
    content: bytes, message: str
) -> None:
    with pytest.raises(EngineError, match=message):
        parse_body(content, "m")


@pytest.mark.parametrize(
    "data",
    [{}, {"choices": []}, {"choices": [{"delta": {}}]}, _body({"content": 3}), _body("text")],
)
def test_an_answer_of_another_shape_is_an_engine_error(data: dict[str, object]) -> None:
    with pytest.raises(EngineError, match="unknown shape"):
        completion_of(data, "m", [ChatMessage("user", "hi")])
