"""create_app(): routers, exception handlers, middleware, OpenAPI and the lifespan in one place."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from sqlalchemy import func, select

from app.api_support import TypedJsonBody, provide_session
from app.cache import CacheListener, cache_status_header, read_cache
from app.config import VERSION, get_settings
from app.db import dispose_engine, transaction
from app.errors import exception_handlers
from app.idempotency import idempotency
from app.json_body import json_body_gate
from app.logging import configure_logging
from app.metrics.api import http_metrics
from app.middleware import (
    api_key_auth,
    complete_allow_header,
    ensure_request_id,
    request_context,
)
from app.models import ApiKey
from app.openapi import finish_openapi
from app.storage import storage_lifespan
from app.system.api import swagger_ui
from app.wiring import api_routes, outbox_relay

log = structlog.get_logger(__name__)


async def _check_authentication_configured() -> None:
    settings = get_settings()
    async with transaction() as session:
        db_keys = (
            await session.execute(
                select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            )
        ).scalar_one()
    if settings.api_keys.strip() or db_keys:
        return
    if not settings.allow_anonymous:
        raise RuntimeError(
            "No API keys are configured (API_KEYS or `make api-key`) and ALLOW_ANONYMOUS is not "
            "true: refusing to start an open API"
        )
    log.warning("API IS OPEN: no API keys configured; set API_KEYS or run `make api-key`")


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    await _check_authentication_configured()
    relay = outbox_relay()
    app.state.relay = relay
    relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
    # LISTEN for cache invalidations; until it is in place the read cache is bypassed.
    cache_listener = CacheListener(read_cache)
    app.state.cache_listener = cache_listener
    cache_task = asyncio.create_task(cache_listener.run(), name="cache-listener")
    # What start-up built (routes, schemas, models, the OpenAPI document: ~150,000 objects)
    # lives as long as the app: kept out of the cyclic collector, a full collection no
    # longer walks it (tens of ms, requests waiting) every so often under load.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # collectable again once this app is gone (tests start many)
        await cache_listener.stop()
        cache_task.cancel()
        await asyncio.gather(cache_task, return_exceptions=True)
        await relay.stop()
        relay_task.cancel()
        await asyncio.gather(relay_task, return_exceptions=True)
        await dispose_engine()


def _die_with_parent() -> None:
    """A uvicorn worker process (API_WORKERS > 1) gets SIGTERM when its parent dies.

    Otherwise a `kill -9` of the api's main process would leave its workers serving on the
    shared socket beside the api the supervisor starts again.
    """
    import ctypes
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def create_app() -> Litestar:
    settings = get_settings()
    if settings.api_workers > 1:
        _die_with_parent()
    configure_logging(settings.log_level, settings.log_format)
    app = Litestar(
        route_handlers=api_routes(),
        dependencies={"db": provide_session},
        # Every JSON body decoded strictly into its type (multipart routes opt out: dto=None).
        dto=TypedJsonBody,
        return_dto=None,
        exception_handlers=exception_handlers,
        # Metrics outermost: their latency covers the whole request, 401s included.
        # Idempotency innermost: it needs the authenticated key, and owns the transaction.
        middleware=[
            http_metrics.middleware,
            request_context,
            api_key_auth,
            json_body_gate,
            cache_status_header,
            idempotency,
        ],
        before_send=[ensure_request_id, complete_allow_header],
        lifespan=[lifespan, storage_lifespan],
        request_max_body_size=settings.max_body_size,
        # structlog owns logging (configure_logging above); Litestar's default config would
        # replace our JSON handler with its own plain-text one.
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="Production Control",
            version=VERSION,
            description=(
                "Shift tasks (batches) from 1C/MES, product unique codes, aggregation, and "
                "background jobs with pollable progress. Errors are RFC 9457 problem+json."
            ),
            path="/schema",
            # Swagger UI served from the api's own assets; every page works offline.
            render_plugins=[swagger_ui("/swagger")],
        ),
        debug=False,
    )
    finish_openapi(app)
    return app
