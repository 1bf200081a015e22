"""The turn routes' replies as bare ASGI apps send what Litestar's own responses send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from litestar import Litestar, Request, Response, post
from litestar.response import Stream
from litestar.testing import TestClient
from litestar.types import ASGIApp

from mvm_chat.api.turns import event_stream, json_reply

CONTENT = {
    "id": "chatcmpl-1",
    "choices": [{"message": {"content": 'Où est ma carte ? 🙂 "quoted"'}}],
    "cost": Decimal("0.000150"),
    "usage": {"prompt_tokens": 24, "completion_tokens": 9},
    "none": None,
}
HEADERS = {"X-Conversation-Id": "abc123"}


async def _chunks() -> AsyncIterator[bytes]:
    for text in ("data: one\n\n", "data: [DONE]\n\n"):
        yield text.encode()


@post("/response", status_code=200)
async def as_response() -> Response[Any]:
    return Response(CONTENT, headers=HEADERS)


@post("/reply", status_code=200)
async def as_reply() -> ASGIApp:
    return json_reply(CONTENT, HEADERS)


@post("/stream", status_code=200)
async def as_stream() -> Response[Any]:
    return Stream(
        _chunks(), media_type="text/event-stream", headers={**HEADERS, "Cache-Control": "no-cache"}
    )


@post("/event-stream", status_code=200)
async def as_event_stream(request: Request[Any, Any, Any]) -> ASGIApp:
    return event_stream(request, _chunks(), HEADERS)


def test_a_json_reply_sends_the_bytes_of_a_response() -> None:
    app = Litestar([as_response, as_reply])
    with TestClient(app) as client:
        expected, got = client.post("/response"), client.post("/reply")
    assert got.status_code == expected.status_code == 200
    assert got.headers.raw == expected.headers.raw
    assert got.content == expected.content
    assert got.json()["cost"] == "0.000150"


def test_an_event_stream_sends_what_a_stream_sends() -> None:
    app = Litestar([as_stream, as_event_stream])
    with TestClient(app) as client:
        expected, got = client.post("/stream"), client.post("/event-stream")
    assert got.status_code == expected.status_code == 200
    assert got.headers.raw == expected.headers.raw
    assert got.headers["content-type"].startswith("text/event-stream")
    assert got.content == expected.content == b"data: one\n\ndata: [DONE]\n\n"
