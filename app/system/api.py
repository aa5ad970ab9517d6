"""Liveness and readiness, outside /api/v1, plus the docs page at /docs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, head
from litestar.openapi.plugins import ScalarRenderPlugin
from sqlalchemy import text

from app.config import VERSION, get_settings
from app.db import get_engine
from app.storage import check_s3


class Health(msgspec.Struct):
    status: str
    version: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]


async def check_database() -> None:
    async with get_engine().connect() as connection:
        await connection.execute(text("SELECT 1"))


def _open_broker_connection() -> None:
    import pika

    params = pika.URLParameters(get_settings().rabbitmq_url)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    pika.BlockingConnection(params).close()


async def check_broker() -> None:
    await asyncio.to_thread(_open_broker_connection)


# Each dependency /ready checks; features with their own infrastructure add theirs here.
readiness_checks: dict[str, Callable[[], Awaitable[None]]] = {
    "database": check_database,
    "broker": check_broker,
    "s3": check_s3,
}


@get("/health", tags=["system"], summary="Liveness")
async def health() -> Health:
    return Health(status="ok", version=VERSION)


@head("/health", tags=["system"], summary="Liveness, for probes that send HEAD")
async def health_head() -> None:
    return None


@get("/ready", tags=["system"], summary="Readiness: database, broker and storage reachable")
async def ready() -> Response[Readiness]:
    async def run(check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), timeout=3)
        except Exception as exc:
            return f"error: {type(exc).__name__}: {exc}"[:300]
        return "ok"

    names = list(readiness_checks)
    results = await asyncio.gather(*(run(readiness_checks[name]) for name in names))
    checks = dict(zip(names, results, strict=True))
    ok = all(result == "ok" for result in checks.values())
    return Response(
        Readiness(status="ok" if ok else "unavailable", checks=checks),
        status_code=200 if ok else 503,
    )


_scalar = ScalarRenderPlugin()


@get("/docs", include_in_schema=False, media_type=MediaType.HTML)
async def docs(request: Request[Any, Any, Any]) -> bytes:
    schema = request.app.openapi_schema.to_schema()
    return _scalar.render(request, schema)
