"""Jinja2 (autoescaped) pages with the security headers every HTML response gets."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from litestar import Request, Response
from litestar.enums import MediaType

from mvm_chat import __version__
from mvm_chat.ledger.pricing import show
from mvm_chat.ledger.report_rows import usd
from mvm_chat.web.view import pct, rate

STATIC_PATH = "/static"
HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def static(name: str) -> str:
    """The URL of a shipped asset; the version busts caches across upgrades."""
    return f"{STATIC_PATH}/{name}?v={__version__}"


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("mvm_chat.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(static=static, show=show, usd=usd, pct=pct, rate=rate)
    return env


def _csp(request: Request[Any, Any, Any]) -> str:
    # Same-origin everything; the chat page's WebSocket is named explicitly, since older
    # browsers do not count ws:// as 'self'.
    host = request.headers.get("host", "")
    if not HOST.fullmatch(host):
        host = ""
    sockets = f" ws://{host} wss://{host}" if host else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'{sockets}; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def page(
    request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any
) -> Response[str]:
    """A rendered template as an HTML response that is never cached or framed."""
    body = environment().get_template(template).render(**context)
    return Response(
        body,
        status_code=status_code,
        media_type=MediaType.HTML,
        headers={
            "Content-Security-Policy": _csp(request),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )
