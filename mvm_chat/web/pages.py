"""The HTML routes: the chat page at ``/`` and the admin dashboard under ``/admin/``.

These handlers are excluded from the bearer middleware. The chat page is open (its script
sends the key the user pastes); the dashboard pages read the sign-in cookie themselves
(:func:`mvm_chat.api.auth.dashboard_admin`) and redirect to the sign-in form without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from mvm_chat.api.auth import ADMIN_COOKIE, dashboard_admin, principal_for_key
from mvm_chat.chat.services import Services
from mvm_chat.store.models import utcnow
from mvm_chat.web.data import gather
from mvm_chat.web.experts import experts_page, record_from_page
from mvm_chat.web.render import STATIC_PATH, page
from mvm_chat.web.view import charts

OPEN: dict[str, Any] = {"exclude_from_auth": True, "include_in_schema": False}
SESSION_SECONDS = 8 * 3600
LOGIN_PATH = "/admin/login"
DASHBOARD_PATH = "/admin/"
BAD_KEY = "That is not a valid admin key."


@get("/", **OPEN)
async def chat_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The chat page: paste a client key, then chat over the WebSocket."""
    return page(request, "chat.html")


@get("/admin", **OPEN)
async def dashboard(request: Request[Any, Any, Any], services: Services) -> Response[Any]:
    """The cost dashboard (signed-in admins; others are sent to the sign-in form)."""
    admin = await dashboard_admin(request)
    if admin is None:
        return Redirect(LOGIN_PATH, status_code=303)
    async with services.db.session() as session:
        data = await gather(
            session, utcnow(), services.settings.routing.baseline_model, services.budgets
        )
    return page(request, "dashboard.html", admin=admin, d=data, **charts(data))


@get(LOGIN_PATH, **OPEN)
async def login_form(request: Request[Any, Any, Any]) -> Response[Any]:
    if await dashboard_admin(request) is not None:
        return Redirect(DASHBOARD_PATH, status_code=303)
    return page(request, "login.html", error=None)


@post(LOGIN_PATH, **OPEN)
async def login(
    request: Request[Any, Any, Any],
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Check an admin key and keep it in an HttpOnly, SameSite=Strict cookie on /admin."""
    key = str(data.get("key", "")).strip()
    principal = await principal_for_key(request, key)
    if principal is None or principal.role != "admin":
        return page(request, "login.html", status_code=403, error=BAD_KEY)
    response: Response[Any] = Redirect(DASHBOARD_PATH, status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        key,
        path="/admin",
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@post("/admin/logout", **OPEN)
async def logout() -> Response[Any]:
    response: Response[Any] = Redirect(LOGIN_PATH, status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


def web_router() -> Router:
    """The chat page, the dashboard pages and the shipped static assets."""
    static = create_static_files_router(
        path=STATIC_PATH,
        directories=[Path(__file__).parent / "static"],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )
    return Router(
        path="/",
        route_handlers=[
            chat_page,
            dashboard,
            login_form,
            login,
            logout,
            experts_page,
            record_from_page,
            static,
        ],
    )
