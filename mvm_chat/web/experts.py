"""The expert-load page at ``/admin/experts``: a heatmap of the last recording of each SGLang
model, and a form that records again (signed-in admins, like the dashboard)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from mvm_chat.api.admin_experts import MAX_SECONDS, MIN_SECONDS, record_experts, telemetry_of
from mvm_chat.api.auth import dashboard_admin
from mvm_chat.chat.services import Services
from mvm_chat.errors import MvmChatError
from mvm_chat.web.heatmap import heatmap
from mvm_chat.web.render import page

OPEN: dict[str, Any] = {"exclude_from_auth": True, "include_in_schema": False}
EXPERTS_PATH = "/admin/experts"
LOGIN_PATH = "/admin/login"
DEFAULT_SECONDS = 10


def _context(services: Services, state: State) -> dict[str, Any]:
    telemetry = telemetry_of(state)
    models = []
    for model in services.settings.models:
        if model.engine != "sglang":
            continue
        last = telemetry.last.get(model.name)
        models.append(
            {
                "name": model.name,
                "tier": model.tier,
                "last": last,
                "map": heatmap(last) if last else None,
                "summary": last.summary() if last else None,
            }
        )
    return {
        "models": models,
        "min_seconds": MIN_SECONDS,
        "max_seconds": MAX_SECONDS,
        "default_seconds": DEFAULT_SECONDS,
    }


@get(EXPERTS_PATH, **OPEN)
async def experts_page(
    request: Request[Any, Any, Any], services: Services, state: State
) -> Response[Any]:
    """The heatmaps of the last recordings (others are sent to the sign-in form)."""
    admin = await dashboard_admin(request)
    if admin is None:
        return Redirect(LOGIN_PATH, status_code=303)
    return page(request, "experts.html", admin=admin, error=None, **_context(services, state))


@post(EXPERTS_PATH, **OPEN)
async def record_from_page(
    request: Request[Any, Any, Any],
    services: Services,
    state: State,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Record one model for the seconds asked, then show the page again."""
    admin = await dashboard_admin(request)
    if admin is None:
        return Redirect(LOGIN_PATH, status_code=303)
    name = str(data.get("model", ""))
    try:
        seconds = int(str(data.get("seconds", DEFAULT_SECONDS)))
        await record_experts(services, telemetry_of(state), name, seconds)
    except ValueError:
        error, status = "seconds: must be a whole number", 422
    except MvmChatError as exc:
        error, status = exc.detail, exc.status_code
    else:
        return Redirect(EXPERTS_PATH, status_code=303)
    context = _context(services, state)
    return page(request, "experts.html", status_code=status, admin=admin, error=error, **context)
