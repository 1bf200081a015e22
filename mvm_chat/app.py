"""``create_app(settings)``: the one place that wires settings, plugins, storage and routes."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import structlog
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from mvm_chat import __version__
from mvm_chat.api.admin import AdminController
from mvm_chat.api.admin_budgets import BudgetController
from mvm_chat.api.admin_costs import AdminCostsController
from mvm_chat.api.admin_experts import AdminExpertsController
from mvm_chat.api.auth import (
    ADMIN_ROLES,
    AGENT_ROLES,
    CLIENT_ROLES,
    OPEN_PATHS,
    BearerAuthMiddleware,
    for_roles,
)
from mvm_chat.api.chat import ConversationController
from mvm_chat.api.errors import handle_exception
from mvm_chat.api.handoffs import HandoffController
from mvm_chat.api.middleware import RequestContextMiddleware, request_id_header
from mvm_chat.api.openai_compat import chat_completions, list_models
from mvm_chat.api.openapi import document_problems
from mvm_chat.api.protection import Protection
from mvm_chat.api.system import healthz, metrics, readyz
from mvm_chat.api.ws import conversation_socket
from mvm_chat.chat.components import fire
from mvm_chat.chat.services import Services
from mvm_chat.errors import DatabaseNotMigrated
from mvm_chat.logging import configure_logging
from mvm_chat.plugins import PluginSet, collect, load_plugins
from mvm_chat.settings import Settings, find_config_file, load_settings
from mvm_chat.store.db import Database, head_revision
from mvm_chat.web.pages import web_router

log = structlog.get_logger(__name__)


def _provide(services: Services) -> Provide:
    """The ``services`` dependency: the app's one instance, with nothing to read from the
    request (Litestar would otherwise build and validate the provider's arguments on every
    call)."""

    def provide_services() -> Services:
        return services

    return Provide(provide_services, sync_to_thread=False, use_cache=True)


async def check_migrated(db: Database) -> None:
    """Refuse to serve on a database that is not at the newest migration."""
    current, head = await db.current_revision(), head_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"the database is not migrated (at {current or 'nothing'}, needs {head}): "
            "run `mvm-chat db upgrade`"
        )


FACTORY = "mvm_chat.app:create_app_from_env"
"""What each worker process of ``mvm-chat serve --workers N`` imports and calls."""
STRICT_PLUGINS_ENV = "MVM_CHAT_STRICT_PLUGINS"


def worker_environment(config: str | None, plugins_dir: str | None, strict: bool) -> dict[str, str]:
    """The variables that carry the command line's choices to the worker processes."""
    env = {STRICT_PLUGINS_ENV: "1" if strict else ""}
    found = find_config_file(config)
    if found is not None:
        env["MVM_CHAT_CONFIG"] = str(found.resolve())
    if plugins_dir:
        env["MVM_CHAT_PLUGINS_DIR"] = str(Path(plugins_dir).resolve())
    return env


def create_app_from_env() -> Litestar:
    """The app of one worker process: settings and plugins as :func:`worker_environment`
    described them (the parent process has migrated the database already)."""
    settings = load_settings()
    configure_logging(settings.server.log_level)
    plugins = load_plugins(strict=os.environ.get(STRICT_PLUGINS_ENV) == "1")
    return create_app(settings, plugins)


def create_app(settings: Settings, plugins: PluginSet | None = None) -> Litestar:
    """A Litestar app serving ``settings``; engines load and the schema is checked at start."""
    plugins = plugins or load_plugins()
    services = Services.build(settings, plugins)
    protection = Protection(settings)

    async def on_startup(app: Litestar) -> None:
        await check_migrated(services.db)
        await services.start()
        await fire(services, "startup", app=app)
        # what is loaded by now lives as long as the process: kept out of the collector's
        # full passes, which otherwise walk all of it (pauses of milliseconds under load)
        gc.freeze()
        log.info("app.started", models=[m.name for m in settings.models])

    async def on_shutdown(app: Litestar) -> None:
        await fire(services, "shutdown", app=app)
        await services.close()
        await protection.close()

    v1 = Router(
        path="/",
        route_handlers=[chat_completions, list_models, ConversationController],
        opt=for_roles(*CLIENT_ROLES),
        security=[{"bearer": []}],
    )
    admin = Router(
        path="/",
        route_handlers=[
            AdminController,
            AdminCostsController,
            AdminExpertsController,
            BudgetController,
        ],
        opt=for_roles(*ADMIN_ROLES),
        security=[{"bearer": []}],
    )
    agents = Router(
        path="/",
        route_handlers=[HandoffController],
        opt=for_roles(*AGENT_ROLES),
        security=[{"bearer": []}],
    )
    extra: list[Any] = collect(plugins.pm.hook.register_routes)
    app = Litestar(
        route_handlers=[
            v1,
            admin,
            agents,
            conversation_socket,
            healthz,
            readyz,
            metrics,
            web_router(),
            *extra,
        ],
        dependencies={"services": _provide(services)},
        middleware=[
            DefineMiddleware(RequestContextMiddleware, metrics=services.metrics),
            *protection.before_auth(),
            DefineMiddleware(
                BearerAuthMiddleware,
                exclude=[f"^{p}" for p in OPEN_PATHS],
                scopes={ScopeType.HTTP},
            ),
            *protection.after_auth(),
        ],
        cors_config=protection.cors,
        before_send=[request_id_header],
        exception_handlers={Exception: handle_exception},
        openapi_config=OpenAPIConfig(
            title="mvm_chat",
            version=__version__,
            path="/schema",
            render_plugins=[
                JsonRenderPlugin(path=["/", "/openapi.json"]),
                SwaggerRenderPlugin(path="/swagger"),
            ],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", description="API key")
                }
            ),
        ),
        request_max_body_size=settings.server.max_body_bytes,
        state=State({"services": services, "protection": protection}),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        debug=False,
    )
    document_problems(app)
    return app
