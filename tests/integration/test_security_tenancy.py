"""Tenancy and roles on every route: the routes are read from the app itself, so that a new
route is walked (or fails the walk until it is taught here) without anyone remembering to.

Tenant ``acme`` owns a conversation and a handoff; ``globex``'s keys of every role, and no key,
try each route on them. Expected: 401 without a key; 403 for a role the route is not open to
(client keys on ``/admin``, agent keys anywhere but the handoffs); 404 for another tenant's
object (indistinguishable from a missing one); and acme's objects unchanged afterwards.
Admin keys are the operator's: the cost, model, plugin, tenant and budget routes are theirs for
every tenant, by design; handoffs and conversations stay scoped to the key's own tenant.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute, WebSocketRoute
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from mvm_chat.api.auth import OPEN_PATHS, ROLES
from mvm_chat.plugins import load_plugins
from mvm_chat.settings import load_settings
from tests.integration.conftest import standin_model
from tests.support import Server

EXPECTED_OPEN = {
    ("GET", "/"),
    ("GET", "/admin"),
    ("GET", "/admin/login"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
    ("GET", "/admin/experts"),
    ("POST", "/admin/experts"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
}
"""Routes without a bearer key besides /schema, OPTIONS (CORS preflight) and static files:
the dashboard's HTML pages check the admin cookie themselves (see tests/integration/
test_dashboard.py). A new route that is open must be added here, on purpose."""


@dataclass
class Site:
    server: Server
    keys: dict[str, str]
    conversation: str
    handoff: str


def _config(standin: str) -> str:
    return f"""
[[tiers]]
name = "local"

{standin_model(standin, "small", "local", max_tokens=16)}"""


def _call(site: Site, who: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.keys[who]}"} if who else {}
    headers.update(kw.pop("headers", {}))
    return httpx.request(
        method, site.server.url + path, headers=headers, timeout=30, follow_redirects=False, **kw
    )


@pytest.fixture(scope="module")
def site(standin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = Server(tmp_path_factory.mktemp("tenancy"), _config(standin)).start()
    try:
        keys = {
            f"{tenant[0]}_{role}": server.key(tenant, role)
            for tenant in ("acme", "globex")
            for role in ("client", "agent", "admin")
        }
        site = Site(server, keys, "", "")
        reply = _call(site, "a_client", "POST", "/v1/chat/completions", json=_chat("Hello"))
        assert reply.status_code == 200, reply.text
        site.conversation = reply.json()["mvm"]["conversation_id"]
        handed = _call(
            site, "a_client", "POST", "/v1/chat/completions", json=_chat("get me a human")
        )
        assert handed.status_code == 200, handed.text
        site.handoff = handed.json()["mvm"]["handoff_id"]
        assert site.handoff
        yield site
    finally:
        server.stop()


def _chat(text: str, conversation: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    if conversation:
        body["metadata"] = {"conversation_id": conversation}
    return body


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    roles: frozenset[str]
    """Roles whose keys the route admits; empty: open."""


def _endpoints(server: Server) -> list[Endpoint]:
    """Every HTTP route of the app the server runs, with the roles its ``opt`` admits."""
    settings = load_settings(server.workdir / "mvm_chat.toml", environ={})
    with warnings.catch_warnings():
        # litestar 2.25 warns of inferred dependencies and unmarked bodies (fine until 3.0)
        warnings.simplefilter("ignore", DeprecationWarning)
        from mvm_chat.app import create_app

        app = create_app(settings, load_plugins())
    found: list[Endpoint] = []
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            continue
        assert isinstance(route, HTTPRoute)
        for handler in route.route_handlers:
            assert isinstance(handler, HTTPRouteHandler)
            for method in sorted(handler.http_methods):
                if method in ("OPTIONS", "HEAD") or route.path.startswith("/static"):
                    continue
                if handler.opt.get("exclude_from_auth") or route.path.startswith(OPEN_PATHS):
                    found.append(Endpoint(method, route.path, frozenset()))
                    continue
                roles = handler.opt.get(ROLES)
                assert roles, f"{method} {route.path}: no roles named in its opt"
                found.append(Endpoint(method, route.path, frozenset(roles)))
    return found


def test_the_open_routes_are_the_expected_ones(site: Site) -> None:
    open_routes = {
        (e.method, e.path)
        for e in _endpoints(site.server)
        if not e.roles and not e.path.startswith("/schema")
    }
    assert open_routes == EXPECTED_OPEN
    # the dashboard's pages without the admin cookie (or with a client key's): sign in first
    for method, path in open_routes:
        if path.startswith("/admin") and path not in ("/admin/login", "/admin/logout"):
            for cookie in ({}, {"mvm_admin": site.keys["a_client"]}):
                response = httpx.request(
                    method, site.server.url + path, cookies=cookie, data={"model": "small"}
                )
                assert response.status_code in (303, 401, 403), (method, path, cookie)


def test_client_keys_reach_no_admin_route_and_agent_keys_only_the_handoffs(site: Site) -> None:
    """What each role's guard is placed on; the walk below then checks every refusal."""
    keyed = [e for e in _endpoints(site.server) if e.roles]
    client_routes = {e.path for e in keyed if "client" in e.roles}
    agent_routes = {e.path for e in keyed if "agent" in e.roles}
    assert client_routes and all(p.startswith("/v1/") for p in client_routes), client_routes
    assert agent_routes and all(p.startswith("/admin/handoffs") for p in agent_routes), agent_routes
    assert all("admin" in e.roles for e in keyed)  # the operator's keys reach every keyed route
    # and on a real server: a client key on every admin route, an agent key off the handoffs
    for endpoint in keyed:
        if endpoint.path.startswith("/admin"):
            response = _request(site, "a_client", endpoint)
            assert response.status_code == 403, f"{endpoint} as a_client: {response.text}"
        if not endpoint.path.startswith("/admin/handoffs"):
            response = _request(site, "a_agent", endpoint)
            assert response.status_code == 403, f"{endpoint} as a_agent: {response.text}"


def _fill(path: str, site: Site) -> str:
    values = {
        "conversation_id": site.conversation,
        "handoff_id": site.handoff,
        "tenant": "acme",
        "name": "small",
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"a new path parameter {name!r}: teach this test its value"
        return values[name]

    return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)


BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/conversations"): {},
    ("POST", "/v1/conversations/{conversation_id:str}/messages"): {"content": "hi"},
    ("POST", "/admin/handoffs/{handoff_id:str}/reply"): {"content": "an agent writes"},
    ("PUT", "/admin/budgets/{tenant:str}"): {"monthly_usd": "1"},
}


def _request(site: Site, who: str | None, endpoint: Endpoint) -> httpx.Response:
    key = (endpoint.method, endpoint.path)
    if key == ("POST", "/v1/chat/completions"):
        body: Any = _chat("hi", site.conversation)  # acme's conversation, by its id
    else:
        body = BODIES.get(key)
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return _call(site, who, endpoint.method, _fill(endpoint.path, site), **kwargs)


def _acme_state(site: Site) -> tuple[list[str], str]:
    detail = _call(site, "a_client", "GET", f"/v1/conversations/{site.conversation}").json()
    handoff = _call(site, "a_agent", "GET", f"/admin/handoffs/{site.handoff}").json()
    return [m["id"] for m in detail["messages"]], handoff["status"]


def test_every_route_refuses_another_tenant_and_other_roles(site: Site) -> None:
    before = _acme_state(site)
    walked = 0
    for endpoint in _endpoints(site.server):
        if not endpoint.roles:
            continue
        walked += 1
        where = f"{endpoint.method} {endpoint.path}"
        assert _request(site, None, endpoint).status_code == 401, where
        for role in ("client", "agent", "admin"):
            who = f"g_{role}"
            if role not in endpoint.roles:
                response = _request(site, who, endpoint)
                assert response.status_code == 403, f"{where} as {who}: {response.text}"
            elif "{" in endpoint.path or endpoint.path == "/v1/chat/completions":
                if role == "admin" and endpoint.roles == {"admin"}:
                    continue  # the operator's routes: every tenant's, by design
                response = _request(site, who, endpoint)
                assert response.status_code == 404, f"{where} as {who}: {response.text}"
    assert walked >= 20
    assert _acme_state(site) == before


def test_lists_show_only_the_callers_tenant(site: Site) -> None:
    for who in ("g_client", "g_admin"):
        listed = _call(site, who, "GET", "/v1/conversations").json()["data"]
        assert site.conversation not in [c["id"] for c in listed]
    for who in ("g_agent", "g_admin"):
        listed = _call(site, who, "GET", "/admin/handoffs").json()["data"]
        assert site.handoff not in [h["id"] for h in listed]
    mine = _call(site, "a_agent", "GET", "/admin/handoffs").json()["data"]
    assert site.handoff in [h["id"] for h in mine]


def test_a_conversation_id_header_of_another_tenant_is_404(site: Site) -> None:
    response = _call(
        site,
        "g_client",
        "POST",
        "/v1/chat/completions",
        json=_chat("hi"),
        headers={"X-Conversation-Id": site.conversation},
    )
    assert response.status_code == 404
    assert site.conversation in response.json()["detail"]  # only the id the caller sent


@pytest.mark.parametrize(
    ("who", "code", "close"),
    [(None, 401, 4401), ("g_agent", 403, 4403), ("g_client", 404, 4404), ("g_admin", 404, 4404)],
)
def test_the_websocket_refuses_other_tenants_and_roles(
    site: Site, who: str | None, code: int, close: int
) -> None:
    url = site.server.url.replace("http://", "ws://") + f"/v1/conversations/{site.conversation}/ws"
    headers = {"Authorization": f"Bearer {site.keys[who]}"} if who else {}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        frame = json.loads(ws.recv(timeout=10))
        assert (frame["type"], frame["code"]) == ("error", code)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == close
