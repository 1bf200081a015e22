"""A lean HTTP/1.1 client for the hot path: kept-alive connections to one plain-``http``
origin, a POST of a JSON body, and the response read line by line (server-sent events).

The ``openai`` engine uses it for upstreams it reaches without TLS or a proxy (a self-hosted
server next to the gateway, where the client's own cost is most of the added latency); httpx
serves everything else. Failures are raised as httpx's exceptions, so that callers map both
clients' errors alike. A request that fails on a reused connection before any byte of its
response arrived, within :data:`STALE_RETRY_S` (the server had closed the idle connection), is
sent once more on a new one.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx

MAX_CONNECTIONS = 256
"""Requests in flight to the origin at once; more wait (up to the read timeout) for a slot."""
MAX_IDLE = 256
IDLE_EXPIRY_S = 4.0
"""Idle connections are dropped before common servers' keep-alive timeouts (uvicorn: 5 s)."""
MAX_HEADER_BYTES = 64 * 1024
READ_BYTES = 64 * 1024
STALE_RETRY_S = 0.5
"""A reused connection that fails sooner than this after the request was sent had been closed
by the server while idle: the request is sent again. Later, the server may have started to
work on it (a whole answer arrives only when it is generated), so it is not sent twice."""


def usable_for(base_url: str) -> bool:
    """Whether ``base_url`` is plain ``http`` that no configured proxy applies to."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    if not ("http" in proxies or "all" in proxies):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname))


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class Response:
    """A response whose body is read as it arrives; :meth:`aclose` returns the connection."""

    def __init__(
        self,
        pool: Http1Pool,
        conn: _Connection,
        status_code: int,
        headers: dict[str, str],
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status_code = status_code
        self.headers = headers
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._left = int(length) if length is not None and not self._chunked else -1
        self._reusable = headers.get("connection", "").lower() != "close" and (
            self._chunked or self._left >= 0
        )
        self._done = self._left == 0
        self._buffer = bytearray()  # chunked: what has arrived and is not yet decoded

    async def _next(self) -> bytes:
        """The next piece of the body (all of it that has arrived); b"" at its end."""
        if self._done:
            return b""
        if self._conn is None:
            raise httpx.StreamClosed()
        try:
            if self._chunked:
                return await self._next_chunks()
            if self._left >= 0:
                data = await self._read(min(self._left, READ_BYTES))
                if not data:
                    raise httpx.RemoteProtocolError("the server closed the body early")
                self._left -= len(data)
                self._done = self._left == 0
                return data
            data = await self._read(READ_BYTES)
            self._done = not data
            return data
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response") from None
        except ValueError:
            raise httpx.RemoteProtocolError("the server sent a malformed body") from None
        except OSError as exc:
            raise httpx.ReadError(f"reading the response failed: {exc}") from None

    async def _read(self, limit: int) -> bytes:
        if self._conn is None:
            raise httpx.StreamClosed()
        async with asyncio.timeout(self._pool.read_timeout_s):
            return await self._conn.reader.read(limit)

    async def _next_chunks(self) -> bytes:
        # Every complete chunk that has arrived, decoded at once: a short answer's chunks come
        # in one read, which then costs one timer and one wake-up rather than one per chunk.
        body = bytearray()
        buffer = self._buffer
        while True:
            while (end := buffer.find(b"\r\n")) >= 0:
                size = int(bytes(buffer[:end]).split(b";", 1)[0], 16)
                if size == 0:
                    trailers_end = buffer.find(b"\r\n\r\n", end)
                    if trailers_end < 0:
                        break  # the trailers (usually none) end with an empty line
                    self._done = True
                    buffer.clear()
                    return bytes(body)
                if len(buffer) < end + size + 4:
                    break
                if buffer[end + size + 2 : end + size + 4] != b"\r\n":
                    raise ValueError("chunk without its line end")
                body += buffer[end + 2 : end + size + 2]
                del buffer[: end + size + 4]
            if body:
                return bytes(body)
            if end < 0 and len(buffer) > MAX_HEADER_BYTES:  # no line end in all of that
                raise ValueError("chunk size line too long")
            data = await self._read(READ_BYTES)
            if not data:
                raise httpx.RemoteProtocolError("the server closed the body early")
            buffer += data

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines, without their line ends."""
        pending = ""
        while piece := await self._next():
            pending += piece.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.removesuffix("\r")
        if pending:
            yield pending

    async def aread(self) -> bytes:
        body = bytearray()
        while piece := await self._next():
            body += piece
        return bytes(body)

    def as_httpx(self, body: bytes) -> httpx.Response:
        """The response as httpx's, for code that reads a failed response's status and body."""
        return httpx.Response(self.status_code, headers=self.headers, content=body)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._pool.give_back(conn, self._done and self._reusable)


class Http1Pool:
    """Kept-alive connections to the origin of ``base_url`` (``http://host:port/path/``)."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path.rstrip("/") + "/"
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        host = self.host if parts.port is None else f"{self.host}:{self.port}"
        fixed = {"Host": host, "User-Agent": "mvm-chat", **headers}
        fixed["Content-Type"] = "application/json"
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=MAX_HEADER_BYTES
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting to the upstream") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to the upstream: {exc}") from None
        return _Connection(reader, writer)

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_EXPIRY_S and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def give_back(self, conn: _Connection, reusable: bool) -> None:
        """A response is done with ``conn``: keep it for the next request, or close it."""
        self._slots.release()
        if not reusable or len(self._idle) >= MAX_IDLE or conn.reader.at_eof():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def post(self, path: str, body: bytes) -> Response:
        """POST ``body`` (JSON) to ``path`` under the base URL; the response, body unread."""
        request = (
            b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n"
            % ((self.path + path).encode(), self._head, len(body))
        ) + body
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection to the upstream became free") from None
        else:
            await self._slots.acquire()  # a slot is free: taken at once, no timer needed
        try:
            return await self._send(request)
        except BaseException:
            self._slots.release()
            raise

    async def _send(self, request: bytes) -> Response:
        conn = self._reuse()
        if conn is not None:
            sent = time.monotonic()
            try:
                return await self._exchange(conn, request)
            except _Stale as exc:
                conn.close()
                if time.monotonic() - sent >= STALE_RETRY_S:
                    raise httpx.RemoteProtocolError(
                        f"the server closed the connection: {exc}"
                    ) from None
        conn = await self._connect()
        try:
            return await self._exchange(conn, request)
        except _Stale as exc:
            conn.close()
            raise httpx.RemoteProtocolError(f"the server closed the connection: {exc}") from None

    async def _exchange(self, conn: _Connection, request: bytes) -> Response:
        reader = conn.reader
        status_line = b""  # until it has arrived, a closed connection is only stale
        try:
            conn.writer.write(request)
            async with asyncio.timeout(self.read_timeout_s):  # one timer for the whole head
                status_line = await reader.readuntil(b"\r\n")
                version, status, *_ = status_line.decode("latin-1").split(" ", 2)
                if not version.startswith("HTTP/1."):
                    raise ValueError(version)
                headers: dict[str, str] = {}
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    name, sep, value = line.decode("latin-1").partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
            return Response(self, conn, int(status), headers)
        except TimeoutError:
            conn.close()
            what = "reading the response headers" if status_line else "waiting for the response"
            raise httpx.ReadTimeout(f"timed out {what}") from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not status_line:
                raise _Stale(str(exc)) from None
            conn.close()
            raise httpx.RemoteProtocolError("the server sent a malformed response") from None
        except OSError as exc:
            conn.close()
            if not status_line:
                raise httpx.ReadError(f"the request failed: {exc}") from None
            raise httpx.RemoteProtocolError("the server sent a malformed response") from None
        except (asyncio.LimitOverrunError, ValueError):
            conn.close()
            raise httpx.RemoteProtocolError("the server sent a malformed response") from None
        except BaseException:  # cancelled: the response will never be read
            conn.close()
            raise

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _Stale(Exception):
    """The connection was closed before any byte of the response arrived."""
