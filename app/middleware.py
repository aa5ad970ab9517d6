"""Request id + access log, and API-key authentication, as plain ASGI middleware."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import select

from app.config import get_settings
from app.db import transaction
from app.errors import problem_response
from app.models import ApiKey

access_log = structlog.get_logger("app.access")

OPEN_PATHS = ("/health", "/ready", "/docs", "/schema")


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
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Valid key hashes from API_KEYS and the api_keys table (re-read every 10 s)."""

    REFRESH_SECONDS = 10.0

    def __init__(self) -> None:
        self.env_hashes = {
            hash_key(k.strip()) for k in get_settings().api_keys.split(",") if k.strip()
        }
        self.db_hashes: set[str] = set()
        self.loaded_at = -1e9

    async def hashes(self) -> set[str]:
        if time.monotonic() - self.loaded_at > self.REFRESH_SECONDS:
            async with transaction() as session:
                rows = await session.execute(
                    select(ApiKey.key_hash).where(ApiKey.revoked_at.is_(None))
                )
                self.db_hashes = set(rows.scalars().all())
            self.loaded_at = time.monotonic()
        return self.env_hashes | self.db_hashes


def api_key_auth(app: ASGIApp) -> ASGIApp:
    ring = KeyRing()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PATHS):
            await app(scope, receive, send)
            return
        valid = await ring.hashes()
        if not valid:  # no keys configured: development mode, open (warned at start-up)
            await app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-api-key", b"").decode("latin-1")
        if sent and any(hmac.compare_digest(hash_key(sent), h) for h in valid):
            await app(scope, receive, send)
            return
        response: Any = problem_response(
            401,
            "Unauthorized",
            "A valid X-API-Key header is required" if not sent else "The X-API-Key is not valid",
            "unauthorized",
        )
        await response.to_asgi_response(app=None, request=None)(scope, receive, send)  # type: ignore[arg-type]

    return middleware
