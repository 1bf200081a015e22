"""Open system routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get

from mvm_chat.chat.services import Services

READY_TIMEOUT_S = 3.0


@get("/healthz", summary="Liveness", tags=["system"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(coro: Any) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(coro, READY_TIMEOUT_S)
    except Exception as exc:
        return False, type(exc).__name__
    return True, ""


@get("/readyz", summary="Readiness: database, cache and engines", tags=["system"])
async def readyz(services: Services) -> Response[dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    ok, detail = await _check(services.db.ping())
    checks["database"] = {"ok": ok, "detail": detail}
    ok, detail = await _check(services.cache.ping())
    checks["cache"] = {"ok": ok, "backend": services.cache.name, "detail": detail}
    for name, engine in services.engines.items():
        try:
            health = await asyncio.wait_for(engine.health(), READY_TIMEOUT_S)
            checks[f"engine:{name}"] = {
                "ok": health.ok,
                "detail": health.detail,
                "breaker": services.breakers.of(name).state,
            }
        except Exception as exc:
            checks[f"engine:{name}"] = {"ok": False, "detail": type(exc).__name__}
    ready = all(c["ok"] for c in checks.values())
    return Response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@get("/metrics", summary="Prometheus metrics", tags=["system"], media_type="text/plain")
async def metrics(services: Services) -> Response[bytes]:
    return Response(
        services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
