"""The terminal chat client behind ``mvm-chat chat``: WebSocket frames in, text out."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect


class ClientError(Exception):
    """The server could not be reached or refused the client."""


class ChatClient:
    """Talks to a running server: creates or continues a conversation, streams replies."""

    def __init__(self, url: str, key: str, model: str = "auto") -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.model = model

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def new_conversation(self) -> str:
        try:
            response = httpx.post(
                f"{self.url}/v1/conversations", json={}, headers=self._headers, timeout=10
            )
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code != 201:
            raise ClientError(f"server answered {response.status_code}: {_detail(response)}")
        return str(response.json()["id"])

    def _ws_url(self, conversation_id: str) -> str:
        base = "ws" + self.url.removeprefix("http")
        return f"{base}/v1/conversations/{conversation_id}/ws"

    def ask(self, socket: ClientConnection, text: str, out: Any = sys.stdout) -> dict[str, Any]:
        """Send one message; write tokens to ``out`` as they arrive; return the done frame."""
        socket.send(json.dumps({"type": "message", "content": text, "model": self.model}))
        while True:
            frame = json.loads(socket.recv())
            kind = frame.get("type")
            if kind == "token":
                out.write(frame["text"])
                out.flush()
            elif kind in ("done", "error", "handoff"):
                return dict(frame)

    def repl(self, conversation_id: str | None = None) -> None:
        conversation_id = conversation_id or self.new_conversation()
        print(f"conversation {conversation_id} (Ctrl-D to leave)", file=sys.stderr)
        try:
            with connect(self._ws_url(conversation_id), additional_headers=self._headers) as ws:
                while True:
                    try:
                        text = input("you> ")
                    except EOFError:
                        print(file=sys.stderr)
                        return
                    if not text.strip():
                        continue
                    sys.stdout.write("bot> ")
                    frame = self.ask(ws, text)
                    print()
                    print(_footer(frame), file=sys.stderr)
        except (OSError, WebSocketException) as exc:
            raise ClientError(f"WebSocket to {self.url} failed: {exc}") from None


def _footer(frame: dict[str, Any]) -> str:
    if frame.get("type") == "error":
        return f"  [error {frame.get('code')}: {frame.get('detail')}]"
    mvm = frame.get("mvm") or {}
    return (
        f"  [{mvm.get('model')} · tier {mvm.get('tier')} · cost ${mvm.get('cost_usd')}"
        f" · saved ${mvm.get('savings_usd')} · cache {mvm.get('cache')}]"
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
