"""Limits and browsers on a real server (on Postgres): body size, ``max_tokens``, message count
and length, WebSocket frame size and idle timeout, requests per minute and answers in progress
per key; then what a browser may do: CORS and the ``Host`` check (by default and as
configured), and the dashboard's cookie, which opens no API route. Nothing may answer 5xx.

The hostile requests (SQL metacharacters, a chosen upstream, price or tier, prompt injection)
are in ``test_security_injection.py``; both run against ``security_site.py``'s server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.conftest import standin_model
from tests.integration.security_site import (
    MAX_BODY_BYTES,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    RPM,
    Site,
    chat,
    serve_site,
)
from tests.support import Server


@pytest.fixture(scope="module")
def site(standin: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir: Path = tmp_path_factory.mktemp("limits")
    with serve_site(standin, pg_url, workdir) as running:
        yield running


# --- limits ------------------------------------------------------------------------------------


def test_size_limits(site: Site) -> None:
    who = site.fresh_key()
    big = site.call(who, "POST", "/v1/chat/completions", json=chat("x" * (MAX_BODY_BYTES + 5000)))
    assert big.status_code == 413
    for field, value in (("max_tokens", 0), ("max_tokens", 8193), ("max_completion_tokens", 9000)):
        response = site.call(who, "POST", "/v1/chat/completions", json=chat("hi", **{field: value}))
        assert response.status_code == 422 and response.json()["detail"].startswith(field)
    many = {"model": "auto", "messages": [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)}
    response = site.call(who, "POST", "/v1/chat/completions", json=many)
    assert (response.status_code, response.json()["detail"].split(":")[0]) == (422, "messages")
    too_long = "y" * (MAX_MESSAGE_CHARS + 1)
    long = site.call(who, "POST", "/v1/chat/completions", json=chat(too_long))
    assert long.status_code == 422 and long.json()["detail"].startswith("messages[0].content")
    conversation = site.call(who, "POST", "/v1/conversations", json={}).json()["id"]
    native = site.call(
        who, "POST", f"/v1/conversations/{conversation}/messages", json={"content": too_long}
    )
    assert native.status_code == 422 and native.json()["detail"].startswith("content")
    assert site.call(who, "GET", f"/v1/conversations/{conversation}").json()["messages"] == []


def _socket(site: Site, who: str) -> Any:
    conversation = site.call(who, "POST", "/v1/conversations", json={}).json()["id"]
    url = site.server.url.replace("http", "ws") + f"/v1/conversations/{conversation}/ws"
    return connect(url, additional_headers={"Authorization": f"Bearer {site.keys[who]}"})


def test_websocket_frame_limits_and_idle_timeout(site: Site) -> None:
    who = site.fresh_key()
    with _socket(site, who) as ws:
        ws.send(json.dumps({"type": "message", "content": "w" * (MAX_MESSAGE_CHARS + 1)}))
        frame = json.loads(ws.recv(timeout=10))
        assert (frame["code"], frame["detail"].split(":")[0]) == (422, "content")
        ws.send(json.dumps({"type": "message", "content": "v" * 300_000}))
        frame = json.loads(ws.recv(timeout=10))
        assert (frame["code"], frame["detail"].split(":")[0]) == (422, "frame")
        # then silence: the server closes the socket after websocket_idle_s
        frame = json.loads(ws.recv(timeout=30))
        assert (frame["type"], frame["code"]) == ("error", 408)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4408
    with _socket(site, who) as ws:
        ws.send("u" * (2 * 1024 * 1024))  # past the server's WebSocket message limit
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1009


def test_requests_per_minute_per_key(site: Site) -> None:
    who, other = site.fresh_key(), site.fresh_key()
    refused = None
    for _ in range(2 * RPM + 1):  # two windows at most, should a minute turn meanwhile
        response = site.call(who, "GET", "/v1/models")
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 200
    assert refused is not None
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 429
    assert site.call(other, "GET", "/v1/models").status_code == 200


def test_concurrent_streams_per_key(site: Site, script: Any) -> None:
    who, other = site.fresh_key(), site.fresh_key()
    script(faults={"generate": "stall", "chat": "stall"})
    results: list[int] = []

    def stream() -> None:
        response = site.call(who, "POST", "/v1/chat/completions", json=chat("first", stream=True))
        results.append(response.status_code)

    first = threading.Thread(target=stream)
    first.start()
    try:
        while not site.upstream_bodies() and first.is_alive():
            threading.Event().wait(0.05)
        second = site.call(who, "POST", "/v1/chat/completions", json=chat("second"))
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
        assert "in progress" in second.json()["detail"]
    finally:
        script()  # ends the stall
        httpx.post(f"{site.standin}/_standin/reset").raise_for_status()
        first.join(timeout=60)
    assert results == [200]
    assert site.call(who, "POST", "/v1/chat/completions", json=chat("third")).status_code == 200
    assert site.call(other, "POST", "/v1/chat/completions", json=chat("x")).status_code == 200


# --- browsers: CORS, the Host header, the dashboard's cookie ------------------------------------


def _allowed_origin(url: str, origin: str) -> str | None:
    """The origin a CORS preflight from ``origin`` is allowed, if any."""
    preflight = httpx.options(
        f"{url}/v1/chat/completions",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    return preflight.headers.get("access-control-allow-origin")


def test_cors_and_allowed_hosts_by_default(site: Site) -> None:
    url = site.server.url
    assert _allowed_origin(url, "http://localhost:5173") == "http://localhost:5173"
    assert _allowed_origin(url, "https://evil.example") is None
    # a page that rebinds its DNS name to 127.0.0.1 still sends its own name as the Host
    rebound = httpx.get(f"{url}/healthz", headers={"Host": "evil.example"})
    assert rebound.status_code == 400
    assert "allowed_hosts" in rebound.json()["detail"]
    assert httpx.get(f"{url}/healthz", headers={"Host": "localhost"}).status_code == 200


def test_cors_and_allowed_hosts_as_configured(
    standin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = f"""
[server]
cors_origins = ["https://chat.example.com"]
allowed_hosts = ["chat.example.com"]

[[tiers]]
name = "local"

{standin_model(standin, "small", "local")}"""
    server = Server(tmp_path_factory.mktemp("configured-browsers"), config).start()
    try:
        url = server.url
        chat_page = "https://chat.example.com"
        assert _allowed_origin(url, chat_page) == chat_page
        for origin in ("http://localhost:5173", "https://chat.example.com.evil.example"):
            assert _allowed_origin(url, origin) is None, origin  # the list replaces the default
        for host, status in (("chat.example.com", 200), ("localhost", 200), ("evil.example", 400)):
            assert httpx.get(f"{url}/healthz", headers={"Host": host}).status_code == status, host
    finally:
        server.stop()


def test_the_dashboard_cookie_opens_no_api_route(site: Site) -> None:
    url = site.server.url
    signed_in = httpx.post(f"{url}/admin/login", data={"key": site.keys["admin"]})
    assert signed_in.status_code == 303, signed_in.text
    cookie = signed_in.headers["set-cookie"].lower()
    for attribute in ("mvm_admin=", "httponly", "samesite=strict", "path=/admin"):
        assert attribute in cookie, signed_in.headers["set-cookie"]
    # a cross-site request carries the cookie but no key: the JSON API and the socket refuse it
    cookies = {"mvm_admin": site.keys["admin"]}
    for path in ("/admin/tenants", "/admin/costs/ledger", "/v1/models", "/v1/conversations"):
        assert httpx.get(f"{url}{path}", cookies=cookies).status_code == 401, path
    conversation = site.call("admin", "POST", "/v1/conversations", json={}).json()["id"]
    ws_url = url.replace("http", "ws") + f"/v1/conversations/{conversation}/ws"
    cookie_header = {"Cookie": f"mvm_admin={site.keys['admin']}"}
    with connect(ws_url, additional_headers=cookie_header, open_timeout=10) as ws:
        frame = json.loads(ws.recv(timeout=10))
        assert (frame["type"], frame["code"]) == ("error", 401)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4401
