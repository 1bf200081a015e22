"""The lean HTTP/1.1 client of the openai engine, against small real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from mvm_chat.engines import http1
from mvm_chat.engines.http1 import Http1Pool, usable_for

SSE = b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
TIMES_OUT_S = 0.3
"""The read timeout where a test wants it to fire."""
GENEROUS_S = 30.0
"""The read timeout elsewhere: one that fired early on a slow machine would turn an answer, or a
protocol error, into a timeout."""


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    parts = [body[:half], body[half:]]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


Reply = Callable[[bytes], bytes]


async def _serve(reply: Reply, close_after: bool = False) -> AsyncIterator[tuple[int, list[int]]]:
    """A server answering each request with ``reply(request_head)``; yields its port and a
    list with its count of connections."""
    connections = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(reply(head))
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, connections


def _ok_chunked(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(SSE)


async def _lines(pool: Http1Pool) -> list[str]:
    response = await pool.post("chat/completions", b"{}")
    try:
        return [line async for line in response.aiter_lines() if line]
    finally:
        await response.aclose()


@pytest.fixture
async def chunked_server() -> AsyncIterator[tuple[int, list[int]]]:
    async for found in _serve(_ok_chunked):
        yield found


async def test_streams_lines_and_keeps_the_connection(
    chunked_server: tuple[int, list[int]],
) -> None:
    port, connections = chunked_server
    pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {"Authorization": "Bearer k"}, 2, 5)
    for _ in range(3):
        assert await _lines(pool) == ["data: one", "data: two", "data: [DONE]"]
    assert connections[0] == 1
    await pool.aclose()


async def test_a_connection_the_server_closed_is_replaced() -> None:
    def reply(_: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SSE), SSE)

    async for port, connections in _serve(reply, close_after=True):
        pool = Http1Pool(f"http://127.0.0.1:{port}/v1/", {}, 2, 5)
        for _ in range(3):
            assert await _lines(pool) == ["data: one", "data: two", "data: [DONE]"]
            await asyncio.sleep(0.05)  # the server's close arrives
        assert connections[0] == 3
        await pool.aclose()


@pytest.mark.parametrize(("closes_after_s", "sent_again"), [(0.0, True), (0.3, False)])
async def test_a_request_is_sent_again_only_when_its_connection_failed_at_once(
    monkeypatch: pytest.MonkeyPatch, closes_after_s: float, sent_again: bool
) -> None:
    """A kept-alive connection that closes as the request arrives had been closed idle: the
    request goes again on a new one. One that closes later may have been worked on (a whole
    answer is only sent when generated): no second request, an error."""
    monkeypatch.setattr(http1, "STALE_RETRY_S", 0.1)
    requests: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            requests.append(1)
            served += 1
            if served == 2:  # the second request on this connection: dropped unanswered
                await asyncio.sleep(closes_after_s)
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SSE), SSE))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        pool = Http1Pool(f"http://127.0.0.1:{port}/v1/", {}, 2, GENEROUS_S)
        assert await _lines(pool) == ["data: one", "data: two", "data: [DONE]"]
        if sent_again:
            assert await _lines(pool) == ["data: one", "data: two", "data: [DONE]"]
            assert len(requests) == 3
        else:
            with pytest.raises(httpx.RemoteProtocolError):
                await _lines(pool)
            assert len(requests) == 2
        await pool.aclose()


async def test_an_error_status_keeps_its_body() -> None:
    def reply(_: bytes) -> bytes:
        body = b'{"error": {"message": "bad model"}}'
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async for port, _ in _serve(reply):
        pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 2, 5)
        response = await pool.post("chat/completions", b"{}")
        body = await response.aread()
        await response.aclose()
        assert response.status_code == 400
        assert response.as_httpx(body).json()["error"]["message"] == "bad model"
        await pool.aclose()


async def test_a_missing_server_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 2, 5)
    with pytest.raises(httpx.ConnectError):
        await pool.post("chat/completions", b"{}")


def test_only_plain_http_without_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert usable_for("http://127.0.0.1:8000/v1")
    assert not usable_for("https://api.example.com/v1")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not usable_for("http://10.0.0.5:8000/v1")


async def _raw_server(answer: bytes, then_close: bool) -> AsyncIterator[int]:
    """A server that reads a request head, writes ``answer`` and then closes the connection
    or keeps it open without another byte."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        if then_close:
            writer.close()
        else:
            held.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        for writer in held:
            writer.close()


@pytest.mark.parametrize(
    ("answer", "then_close", "error", "message"),
    [
        (b"", False, httpx.ReadTimeout, "waiting for the response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", False, httpx.ReadTimeout, "response headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", True, httpx.RemoteProtocolError, "malformed"),
        (b"SMTP ready\r\n\r\n", False, httpx.RemoteProtocolError, "malformed"),
        (b"", True, httpx.RemoteProtocolError, "closed the connection"),
    ],
    ids=["silent", "stalls-in-head", "closes-in-head", "not-http", "closes-at-once"],
)
async def test_a_broken_response_head_is_an_httpx_error(
    answer: bytes, then_close: bool, error: type[Exception], message: str
) -> None:
    read_timeout_s = TIMES_OUT_S if error is httpx.ReadTimeout else GENEROUS_S
    async for port in _raw_server(answer, then_close):
        pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 2, read_timeout_s)
        with pytest.raises(error, match=message):
            await pool.post("chat/completions", b"{}")
        await pool.aclose()


async def test_a_request_waits_for_a_free_connection_then_gives_up(
    monkeypatch: pytest.MonkeyPatch, chunked_server: tuple[int, list[int]]
) -> None:
    monkeypatch.setattr("mvm_chat.engines.http1.MAX_CONNECTIONS", 1)
    port, _ = chunked_server
    pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 2, GENEROUS_S)
    held = await pool.post("chat/completions", b"{}")
    pool.read_timeout_s = TIMES_OUT_S  # for the wait that must give up
    with pytest.raises(httpx.PoolTimeout):
        await pool.post("chat/completions", b"{}")
    pool.read_timeout_s = GENEROUS_S  # the next one gets the slot
    waiting = asyncio.ensure_future(_lines(pool))
    await asyncio.sleep(0)
    await held.aread()
    await held.aclose()  # its slot goes to the request waiting for one
    assert await waiting == ["data: one", "data: two", "data: [DONE]"]
    await pool.aclose()


async def _dribbled(answer: bytes, step: int) -> AsyncIterator[int]:
    """A server that writes ``answer`` ``step`` bytes at a time, each write sent on its own."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for i in range(0, len(answer), step):
            writer.write(answer[i : i + step])
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
async def test_chunks_are_decoded_however_the_bytes_arrive(step: int) -> None:
    events = [b"data: %d\n\n" % i for i in range(12)]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(e), e) for e in events)
    answer = CHUNKED_HEAD + body + b"0\r\nX-Trailer: yes\r\n\r\n"
    async for port in _dribbled(answer, step):
        pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 2, 30)
        assert await _lines(pool) == [f"data: {i}" for i in range(12)]
        await pool.aclose()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"5\r\nhello\r\n3\r\nab", "closed the body early"),
        (b"5\r\nhelloXX0\r\n\r\n", "malformed body"),
        (b"zz\r\nhello\r\n0\r\n\r\n", "malformed body"),
        (b"1" * 70_000, "malformed body"),
    ],
    ids=["cut-mid-chunk", "no-line-end", "bad-size", "endless-size-line"],
)
async def test_a_broken_chunked_body_is_a_protocol_error(body: bytes, message: str) -> None:
    async for port in _dribbled(CHUNKED_HEAD + body, 1000):
        pool = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 2, 30)
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await _lines(pool)
        await pool.aclose()
