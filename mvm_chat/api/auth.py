"""Bearer-key authentication and the roles a route admits."""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from mvm_chat.chat.services import Services
from mvm_chat.errors import Forbidden, Unauthorized
from mvm_chat.store.keys import Principal

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/schema")
ADMIN_COOKIE = "mvm_admin"
"""The dashboard's sign-in cookie: the admin key itself, HttpOnly, SameSite=Strict, on /admin."""


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if connection.scope["type"] == ScopeType.WEBSOCKET:
        token = connection.query_params.get("token")
        return token or None
    return None


async def principal_for_key(
    connection: ASGIConnection[Any, Any, Any, Any], key: str
) -> Principal | None:
    """The principal behind ``key`` (unknown, revoked or oversized keys: None)."""
    if not key or len(key) > 256:
        return None
    services: Services = connection.app.state.services
    principal = await services.keys.principal(key)
    if principal is not None:
        structlog.contextvars.bind_contextvars(tenant=principal.tenant)
    return principal


async def resolve_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal behind the connection's key; :class:`Unauthorized` otherwise."""
    key = _bearer(connection)
    if key is None:
        raise Unauthorized("missing bearer key (Authorization: Bearer KEY)")
    principal = await principal_for_key(connection, key)
    if principal is None:
        raise Unauthorized("invalid key")
    return principal


async def dashboard_admin(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The admin signed in to the HTML dashboard by its cookie, or None.

    Only the dashboard's own pages call this (they are excluded from the bearer middleware);
    the JSON API never reads the cookie, so it cannot be driven by a cross-site request.
    """
    principal = await principal_for_key(connection, connection.cookies.get(ADMIN_COOKIE, ""))
    return principal if principal is not None and principal.role == "admin" else None


ROLES = "roles"
"""The ``opt`` key of a route handler, controller or router that names the roles whose keys
may call it (see :func:`for_roles`); without it, any valid key may."""

CLIENT_ROLES = ("client", "admin")
ADMIN_ROLES = ("admin",)
AGENT_ROLES = ("agent", "admin")


def for_roles(*roles: str) -> dict[str, tuple[str, ...]]:
    """The ``opt`` of routes open only to keys of ``roles``: ``opt=for_roles("admin")``.

    Checked by :class:`BearerAuthMiddleware` rather than by a Litestar guard, which would copy
    the route handler on every request."""
    return {ROLES: roles}


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer KEY`` to a principal on HTTP routes, and refuses a
    key whose role the route's ``opt`` (:func:`for_roles`) does not name.

    WebSockets authenticate in their handler, so that a refused client gets an ``error``
    frame it can read rather than a bare handshake failure.
    """

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        principal = await resolve_principal(connection)
        handler: BaseRouteHandler = connection.scope["route_handler"]
        roles = handler.opt.get(ROLES)
        if roles is not None and principal.role not in roles:
            raise Forbidden(f"this route is not open to keys with the role {principal.role!r}")
        return AuthenticationResult(user=principal, auth=None)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise Unauthorized("missing bearer key")
    return principal
