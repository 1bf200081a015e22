"""Bearer-key authentication and role guards."""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from mvm_chat.chat.services import Services
from mvm_chat.errors import Forbidden, Unauthorized
from mvm_chat.store.keys import Principal, authenticate

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/schema")


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if connection.scope["type"] == ScopeType.WEBSOCKET:
        token = connection.query_params.get("token")
        return token or None
    return None


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer KEY`` (or ``?token=`` on WebSockets) to a principal."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        key = _bearer(connection)
        if key is None:
            raise Unauthorized("missing bearer key (Authorization: Bearer KEY)")
        if len(key) > 256:
            raise Unauthorized("invalid key")
        services: Services = connection.app.state.services
        async with services.db.session() as session:
            principal = await authenticate(session, key)
        if principal is None:
            raise Unauthorized("invalid key")
        structlog.contextvars.bind_contextvars(tenant=principal.tenant)
        return AuthenticationResult(user=principal, auth=None)


def _role_guard(*roles: str) -> Any:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal):
            raise Unauthorized("missing bearer key")
        if principal.role not in roles:
            raise Forbidden(f"a {principal.role} key cannot use this route")

    return guard


client_guard = _role_guard("client", "admin")
admin_guard = _role_guard("admin")


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise Unauthorized("missing bearer key")
    return principal
