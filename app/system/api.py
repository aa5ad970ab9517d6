"""Liveness and readiness, outside /api/v1, plus the docs page at /docs.

The docs load Swagger UI from the api itself (the files of the swagger-ui-py package, served
under /docs/assets): factories run offline, and a page that fetches its script from a CDN
is a blank page there.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, Router, get, head
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
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


DOCS_ASSETS = "/docs/assets"


def _swagger_ui_files() -> Path:
    """swagger-ui-py's copy of the Swagger UI distribution (with its LICENSE), located
    without importing the package (its import pulls in template engines we don't use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: the docs have no assets")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def swagger_ui(path: str) -> SwaggerRenderPlugin:
    """A Swagger UI page whose script, styles and icon all come from DOCS_ASSETS."""
    return SwaggerRenderPlugin(
        path=path,
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
    )


def docs_assets() -> Router:
    return create_static_files_router(
        path=DOCS_ASSETS, directories=[_swagger_ui_files()], include_in_schema=False
    )


_swagger = swagger_ui("/docs")


@get("/docs", include_in_schema=False, media_type=MediaType.HTML)
async def docs(request: Request[Any, Any, Any]) -> bytes:
    # The served document (app/openapi.py's corrections included), as /schema/openapi.json.
    schema = request.app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return _swagger.render(request, schema)
