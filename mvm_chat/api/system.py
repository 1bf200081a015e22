"""Open system routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

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


@get(
    "/readyz",
    summary="Readiness: database, cache and engines",
    tags=["system"],
    responses={503: ResponseSpec(dict[str, Any], description="Not ready: the same body")},
)
async def readyz(services: Services) -> Response[dict[str, Any]]:
    async def engine_check(name: str) -> dict[str, Any]:
        try:
            health = await asyncio.wait_for(services.engines[name].health(), READY_TIMEOUT_S)
            ok, detail = health.ok, health.detail
        except Exception as exc:
            ok, detail = False, type(exc).__name__
        return {"ok": ok, "detail": detail, "breaker": services.breakers.of(name).state}

    names = list(services.engines)
    (db_ok, db_detail), (cache_ok, cache_detail), *engines = await asyncio.gather(
        _check(services.db.ping()),
        _check(services.cache.ping()),
        *(engine_check(name) for name in names),
    )
    checks: dict[str, dict[str, Any]] = {
        "database": {"ok": db_ok, "detail": db_detail},
        "cache": {"ok": cache_ok, "backend": services.cache.name, "detail": cache_detail},
    }
    checks.update({f"engine:{name}": check for name, check in zip(names, engines, strict=True)})
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
