"""Request id + access log, and API-key authentication, as plain ASGI middleware."""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import select

from app.api_keys import hash_key
from app.config import get_settings
from app.db import transaction
from app.errors import problem_response
from app.models import ApiKey

access_log = structlog.get_logger("app.access")

# /metrics has its own optional token (METRICS_TOKEN), checked by its handler.
OPEN_PATHS = ("/health", "/ready", "/docs", "/schema", "/metrics")

# Where api_key_auth leaves the hash of the key a request authenticated with.
AUTHENTICATED_KEY = "api_key_hash"


def request_context(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "request",
                method=scope.get("method", ""),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


async def ensure_request_id(message: Message, scope: Scope) -> None:
    """Before-send hook: responses that never reached a route (404, 405) get an id too."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "x-request-id" not in headers:
        sent = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        headers["X-Request-ID"] = sent[:128] or uuid.uuid4().hex


class KeyRing:
    """Valid key hashes from API_KEYS and the api_keys table.

    The table is re-read at most every REFRESH_SECONDS, so a key created or revoked with
    `python -m app.api_keys` takes effect in a running api within that time.
    """

    REFRESH_SECONDS = 10.0

    def __init__(self) -> None:
        self.hashes_cached: set[str] = set()
        self.loaded_at = -1e9

    def invalidate(self) -> None:
        """Re-read the keys on the next request (after a change made in this process)."""
        self.loaded_at = -1e9

    async def hashes(self) -> set[str]:
        if time.monotonic() - self.loaded_at > self.REFRESH_SECONDS:
            env_keys = (k.strip() for k in get_settings().api_keys.split(","))
            async with transaction() as session:
                rows = await session.execute(
                    select(ApiKey.key_hash).where(ApiKey.revoked_at.is_(None))
                )
                self.hashes_cached = {hash_key(k) for k in env_keys if k} | set(rows.scalars())
            self.loaded_at = time.monotonic()
        return self.hashes_cached


# One ring per process, shared by every app instance (tests invalidate it).
key_ring = KeyRing()


def authenticated_key(scope: Scope) -> str | None:
    """The SHA-256 of the request's valid X-API-Key; None when the API runs open."""
    key_hash: str | None = scope["state"].get(AUTHENTICATED_KEY)
    return key_hash


def api_key_auth(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PATHS):
            await app(scope, receive, send)
            return
        valid = await key_ring.hashes()
        # No keys at all: development mode, open (warned at start-up) unless anonymous access
        # is off, e.g. in the container after the last key was revoked.
        if not valid and get_settings().allow_anonymous:
            await app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-api-key", b"").decode("latin-1")
        sent_hash = hash_key(sent)
        if sent and any(hmac.compare_digest(sent_hash, h) for h in valid):
            scope["state"][AUTHENTICATED_KEY] = sent_hash
            await app(scope, receive, send)
            return
        response: Any = problem_response(
            401,
            "Unauthorized",
            "A valid X-API-Key header is required" if not sent else "The X-API-Key is not valid",
            "unauthorized",
            headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
        )
        await response.to_asgi_response(app=None, request=None)(scope, receive, send)

    return middleware


async def complete_allow_header(message: Message, scope: Scope) -> None:
    """Before-send hook: OPTIONS answers name every method of the path.

    Litestar builds a path's OPTIONS handler with the first handlers registered for it, so
    `/batches/{id}` answered `Allow: GET, OPTIONS` without PATCH.
    """
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    handler = scope.get("route_handler")
    for route in scope["app"].routes:
        if handler in getattr(route, "route_handlers", ()):
            methods: set[str] = getattr(route, "methods", set())
            MutableScopeHeaders.from_message(message)["Allow"] = ", ".join(sorted(methods))
            return
