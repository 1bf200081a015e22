"""Stream chunks of the OpenAI wire format: JSON objects (Python's NaN and Infinity too),
anything else an engine error."""

from __future__ import annotations

import math

import pytest

from mvm_chat.engines.openai_wire import parse_chunk
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
