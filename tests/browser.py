"""A small Chrome DevTools Protocol client: headless Chromium driven from the tests.

Chromium starts with ``--remote-debugging-port=0`` and writes the port it chose to
``DevToolsActivePort`` in its user-data directory (first line: the port, second: the browser
target's path). The client lists the targets (``GET /json/list``), connects to the page
target's WebSocket and sends protocol commands (``{"id", "method", "params"}``), matching each
answer by its ``id``; the events in between (``{"method", "params"}``) are kept in order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support import unavailable

START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


class BrowserError(AssertionError):
    """A protocol error, a JavaScript exception in the page, or a navigation that failed."""


def chromium_path() -> str:
    """The Chromium binary, or ``unavailable()`` (which fails under CI=true)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("chromium is not installed (make test installs it via scripts/system-deps.sh)")
    raise AssertionError("unreachable")


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="mvm-chromium-"))
        self.log = self.profile / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self.events: deque[dict[str, Any]] = deque()
        self.errors: list[str] = []
        """JavaScript exceptions and console errors the page reported (CSP violations too)."""
        self._next_id = 0
        self._stack = ExitStack()

    def start(self) -> Browser:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    chromium_path(),
                    "--headless=new",
                    "--remote-debugging-port=0",
                    f"--user-data-dir={self.profile}",
                    "--no-sandbox",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-gpu",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "about:blank",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its helper processes end with it (close())
            )
        try:
            port = self._port()
            pages = [
                t
                for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                if t.get("type") == "page"
            ]
            if not pages:
                raise BrowserError("chromium has no page target")
            self.ws = self._stack.enter_context(
                connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
            )
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call("Log.enable")
        except BaseException:
            self.close()
            raise
        return self

    def _port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrowserError(f"chromium exited: {self.log.read_text()[-2000:]}")
            lines = marker.read_text().splitlines() if marker.exists() else []
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
            time.sleep(0.05)
        raise BrowserError("chromium did not write DevToolsActivePort")

    def _receive(self, timeout: float) -> dict[str, Any]:
        assert self.ws is not None, "the browser is not started"
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        if "id" not in message:
            self._note(message)
            self.events.append(message)
        return message

    def _note(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(str(details.get("exception", {}).get("description", details)))
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = params.get("args", [])
            self.errors.append("console: " + " ".join(str(a.get("value", a)) for a in args))
        elif event.get("method") == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"{entry.get('source')}: {entry.get('text')}")

    def call(self, method: str, timeout: float = CALL_TIMEOUT_S, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its ``result``."""
        assert self.ws is not None, "the browser is not started"
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(max(deadline - time.monotonic(), 0.01))
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def _event(self, method: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while self.events:
                event = self.events.popleft()
                if event.get("method") == method:
                    return event
            self._receive(max(deadline - time.monotonic(), 0.01))

    def navigate(self, url: str, timeout: float = CALL_TIMEOUT_S) -> None:
        """Load ``url`` in the page and wait for its load event."""
        self.events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        loader = result.get("loaderId")
        # A late load event of the page before (after a form's submission) comes ahead of
        # this navigation's frameNavigated: only a load event after that one counts.
        while loader:
            event = self._event("Page.frameNavigated", timeout)
            if event.get("params", {}).get("frame", {}).get("loaderId") == loader:
                break
        self._event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout: float = 60.0) -> Any:
        """Poll a JavaScript expression until it is truthy (in JavaScript); return its value.

        An evaluation that fails while the page is navigating counts as not yet true.
        """
        probe = f"(async () => {{ const v = await ({condition}); return [!!v, v]; }})()"
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                truthy, last = self.evaluate(probe)
            except BrowserError as exc:
                last = exc
            else:
                if truthy:
                    return last
            time.sleep(0.1)
        raise BrowserError(f"timed out waiting for {condition!r} (last: {last!r})")

    def close(self) -> None:
        """Stop Chromium and its helper processes, and remove its profile."""
        if self.ws is not None:
            with suppress(Exception):  # ask it to quit, so that it ends its helpers itself
                self.ws.send(json.dumps({"id": 0, "method": "Browser.close", "params": {}}))
        self.ws = None
        self._stack.close()
        if self.proc is not None:
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            with suppress(ProcessLookupError):  # whatever is left of its process group
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
