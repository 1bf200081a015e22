"""Admin routes (admin keys only): the catalog with engine health, and the tenants."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from sqlalchemy import select

from mvm_chat.chat.components import describe
from mvm_chat.chat.services import Services
from mvm_chat.store.models import Tenant


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]

    @get("/models", summary="Configured models with tier, engine and health")
    async def models(self, services: Services) -> list[dict[str, Any]]:
        rows = []
        for model in services.settings.models:
            engine = services.engines[model.name]
            health = await engine.health()
            rows.append(
                {
                    "name": model.name,
                    "tier": model.tier,
                    "engine": model.engine,
                    "healthy": health.ok,
                    "detail": health.detail,
                    "queue_depth": engine.queue_depth,
                    "breaker": services.breakers.of(model.name).state,
                    "info": await engine.model_info(),
                }
            )
        return rows

    @get("/plugins", summary="Plugins: source, hooks, registered components, error counts")
    async def plugins(self, services: Services) -> list[dict[str, Any]]:
        return describe(services.plugins, services.components)

    @get("/tenants", summary="Tenants")
    async def tenants(self, services: Services) -> list[dict[str, str]]:
        async with services.db.session() as session:
            rows = (await session.scalars(select(Tenant).order_by(Tenant.name))).all()
        return [{"id": t.id, "name": t.name, "created_at": t.created_at.isoformat()} for t in rows]
