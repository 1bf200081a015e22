"""What only SGLang's protocol needs (the OpenAI wire format is in ``openai_wire.py``): native
JSON answers, and the regex that constrains an answer to fixed choices (see ``sglang.py`` for the
SGLang version and the files these shapes come from)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from mvm_chat.engines.openai_wire import parse_body, status_problem
from mvm_chat.errors import EngineError

_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()")


def choice_regex(choices: Sequence[str]) -> str:
    """A regular expression that matches exactly one of ``choices``: each escaped, alternated."""
    escaped = ("".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in c) for c in choices)
    return "(" + "|".join(escaped) + ")"


def json_object(name: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON object a 200 answer holds; any other status or body is an error."""
    if response.status_code != 200:
        raise EngineError(status_problem(name, response))
    return parse_body(response.content, name)
