"""Log lines: one JSON object each, with an ISO 8601 UTC timestamp, secrets redacted (a
process of its own, as a server's stderr)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

SCRIPT = """
import logging
from decimal import Decimal

import structlog

from mvm_chat.logging import configure_logging

configure_logging("info")
structlog.contextvars.bind_contextvars(request_id="r1")
structlog.get_logger("t").info(
    "request",
    path="/v1/x?token=abc123",
    authorization="Bearer sk-secret",
    cost=Decimal("0.25"),
    thing=object(),
    detail={"note": "retry with bearer sk-nested"},
)
structlog.get_logger("t").debug("not at info")
logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "::1", "/ws?token=k9")
"""


def _lines() -> tuple[list[dict[str, Any]], str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    return [json.loads(line) for line in done.stderr.splitlines()], done.stderr


def test_a_line_is_json_with_a_utc_timestamp_and_no_secret() -> None:
    before = datetime.now(UTC)
    [entry, foreign, quoted], text = _lines()
    assert (entry["event"], entry["level"], entry["request_id"]) == ("request", "info", "r1")
    assert entry["path"] == "/v1/x?token=[redacted]"
    assert entry["authorization"] == "[redacted]" and "sk-secret" not in text
    assert entry["detail"] == {"note": "retry with bearer [redacted]"}  # nested, any case
    assert entry["cost"] == "0.25" and entry["thing"].startswith("<object object")
    for line in (entry, foreign):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])
        stamped = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert before <= stamped <= datetime.now(UTC)
    assert foreign["event"] == "Started server process [42]"
    assert (foreign["level"], foreign["logger"]) == ("warning", "uvicorn.error")
    # the key sits before an escaped quote in the rendered line: hidden, the line still JSON
    assert quoted["event"] == '::1 - "WebSocket /ws?token=[redacted]" [accepted]'
    assert "k9" not in text
