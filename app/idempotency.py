"""The Idempotency-Key header (IETF httpapi draft) on POSTs that create something or start work.

A handler opts in with `operation_class=IdempotentOperation` (which also documents the
header), and the `idempotency` middleware, innermost after authentication, then owns that
request's transaction:

1. The key must be 1..255 printable ASCII characters, else 422 naming the header.
2. The body is read (Litestar caches it for the handler) and hashed with the method, the
   path with its query and the media type: that hash is what "the same request" means.
3. `pg_try_advisory_xact_lock` on (API key, key): not granted means the first request with
   this key is still running, in this or any other api process -> 409.
4. A live stored response: same hash -> replayed (status, body, `Idempotent-Replayed:
   true`), the handler does not run; another hash -> 422.
5. Otherwise the handler runs on this same session (`provide_session` hands it out instead
   of opening its own) and its response is held back. A 2xx is stored in that session and
   committed together with the work, and only then sent; anything else rolls back, so a
   rejected request keeps no key and sending it again runs it again.

So a key exists exactly when its work does: one commit writes both, or neither is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any, cast

from litestar import Request
from litestar.enums import ParamType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIType, Operation, Schema
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import get_sessionmaker
from app.errors import (
    Conflict,
    DomainError,
    InputInvalid,
    domain_error_response,
    http_exception_handler,
    integrity_error_handler,
    internal_error_handler,
)
from app.middleware import authenticated_key
from app.models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
ANONYMOUS_SCOPE = "anonymous"  # every caller shares one scope when the API runs open

IDEMPOTENCY_KEY_PARAMETER = OpenAPIParameter(
    name=HEADER,
    param_in=ParamType.HEADER,
    required=False,
    # Printable ASCII; no surrounding spaces, which HTTP strips from header values anyway.
    # No example: one example key shared by every operation would be a key reused (422).
    schema=Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[!-~]([ -~]*[!-~])?$",
    ),
    description=(
        "Makes a retry safe: for 24 h (IDEMPOTENCY_TTL) the same key with the same request "
        "gets the first response again (header `Idempotent-Replayed: true`) and nothing is "
        "done twice; the same key with another request is a 422, a repeat while the first is "
        "still running a 409. Keys are per API key. Only successful (2xx) responses are kept: "
        "after a refusal the same key runs the request again."
    ),
)


@dataclass
class IdempotentOperation(Operation):
    """`@post(..., operation_class=IdempotentOperation)`: the handler takes Idempotency-Key.

    One marker for both sides: the OpenAPI operation documents the header, and the
    middleware honours it on exactly these handlers.
    """

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY_PARAMETER]


_SESSION = "idempotency_session"  # scope["state"] key of the session the middleware owns
_BOUNDARY_RE = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_KEY_LOC: list[str | int] = ["header", HEADER]


def request_session(scope: Scope) -> AsyncSession | None:
    """The session whose transaction the middleware commits, if it owns this request."""
    session: AsyncSession | None = scope["state"].get(_SESSION)
    return session


def _accepts_key(scope: Scope) -> bool:
    handler = scope.get("route_handler")
    return isinstance(handler, HTTPRouteHandler) and issubclass(
        handler.operation_class, IdempotentOperation
    )


def _sent_key(scope: Scope) -> str | None:
    values = [value for name, value in scope["headers"] if name == b"idempotency-key"]
    if not values:
        return None
    if len(values) > 1:
        raise InputInvalid.at(_KEY_LOC, "send the header once", "value_error")
    key = values[0].decode("latin-1")
    if not key:
        raise InputInvalid.at(_KEY_LOC, "must not be empty", "string_too_short")
    if len(key) > MAX_KEY_LENGTH:
        raise InputInvalid.at(
            _KEY_LOC, f"must be at most {MAX_KEY_LENGTH} characters", "string_too_long"
        )
    if not key.isascii() or not key.isprintable():
        raise InputInvalid.at(_KEY_LOC, "must be printable ASCII", "value_error")
    return key


def _request_hash(scope: HTTPScope, body: bytes) -> str:
    """What makes two requests "the same": method, path and query, media type, body."""
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if boundary := _BOUNDARY_RE.search(content_type):
        # A client retrying an upload usually builds a new random multipart boundary: the
        # same file and fields are the same request.
        body = body.replace(b"--" + boundary.group(1), b"--")
    digest = hashlib.sha256()
    for part in (
        scope["method"].encode(),
        scope["path"].rstrip("/").encode(),  # a trailing slash addresses the same route
        scope.get("query_string", b""),
        media_type,
        body,
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _lock_id(scope_name: str, key: str) -> int:
    """A signed 64-bit advisory lock id for (API key, key)."""
    digest = hashlib.sha256(f"{scope_name}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _HeldResponse:
    """Collects what the handler sends, so nothing goes out before the commit."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status = 500
        self.content_type: str | None = None
        self.body = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", []):
                if name.lower() == b"content-type":
                    self.content_type = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
        self.messages.append(message)

    async def release(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


async def _store(
    session: AsyncSession,
    scope: HTTPScope,
    scope_name: str,
    key: str,
    digest: str,
    held: _HeldResponse,
) -> None:
    values = {
        "request_hash": digest,
        "method": scope["method"],
        "path": scope["path"],
        "response_status": held.status,
        "response_body": held.body,
        "content_type": held.content_type,
        "created_at": func.now(),
        "expires_at": func.now() + dt.timedelta(seconds=get_settings().idempotency_ttl),
    }
    # An expired row may still be there (the prune job runs daily): it counts as absent.
    statement = insert(IdempotencyKey).values(scope=scope_name, key=key, **values)
    await session.execute(
        statement.on_conflict_do_update(index_elements=["scope", "key"], set_=values)
    )


async def _send_problem(error: DomainError, scope: Scope, receive: Receive, send: Send) -> None:
    response = domain_error_response(error)
    await response.to_asgi_response(app=None, request=None)(scope, receive, send)  # type: ignore[arg-type]


async def _run_once(
    app: ASGIApp, request: Request[Any, Any, Any], send: Send, key: str, body: bytes
) -> None:
    scope, receive = cast("HTTPScope", request.scope), request.receive
    digest = _request_hash(scope, body)
    scope_name = authenticated_key(scope) or ANONYMOUS_SCOPE
    held = _HeldResponse()
    async with get_sessionmaker()() as session:
        locked = await session.scalar(
            select(func.pg_try_advisory_xact_lock(_lock_id(scope_name, key)))
        )
        if not locked:
            in_flight = Conflict(
                "Request with this Idempotency-Key is still in progress; "
                "send it again once the first one has finished"
            )
            await _send_problem(in_flight, scope, receive, send)
            return
        stored = (
            await session.execute(
                select(
                    IdempotencyKey.request_hash,
                    IdempotencyKey.response_status,
                    IdempotencyKey.response_body,
                    IdempotencyKey.content_type,
                ).where(
                    IdempotencyKey.scope == scope_name,
                    IdempotencyKey.key == key,
                    IdempotencyKey.expires_at > func.now(),
                )
            )
        ).one_or_none()
        if stored is not None:
            await session.rollback()  # releases the lock before the reply goes out
            if stored.request_hash != digest:
                reused = InputInvalid.at(
                    _KEY_LOC,
                    "already used with a different request (method, path or body)",
                    "idempotency_key_reused",
                )
                await _send_problem(reused, scope, receive, send)
                return
            replay = ASGIResponse(
                body=stored.response_body,
                status_code=stored.response_status,
                media_type=stored.content_type,
                headers={"Idempotent-Replayed": "true"},
            )
            await replay(scope, receive, send)
            return
        scope["state"][_SESSION] = session
        try:
            await app(scope, receive, held.send)
        finally:
            del scope["state"][_SESSION]
        if not 200 <= held.status < 300:
            await session.rollback()
            await held.release(send)
            return
        try:
            await _store(session, scope, scope_name, key, digest, held)
            await session.commit()
        except Exception as exc:
            await session.rollback()
            # Handled here: the handler's response had started (into `held`), so Litestar's
            # outer exception handling would refuse to answer.
            failed = (
                integrity_error_handler(request, exc)
                if isinstance(exc, IntegrityError)
                else internal_error_handler(request, exc)
            )
            await failed.to_asgi_response(app=None, request=request)(scope, receive, send)
            return
    await held.release(send)


def idempotency(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _accepts_key(scope):
            await app(scope, receive, send)
            return
        try:
            key = _sent_key(scope)
        except DomainError as invalid:
            await _send_problem(invalid, scope, receive, send)
            return
        if key is None:
            await app(scope, receive, send)
            return
        request: Request[Any, Any, Any] = Request(scope, receive)
        try:
            body = await request.body()  # cached in the scope: the handler reads it again
        except HTTPException as exc:  # too large, client gone
            refused = http_exception_handler(request, exc)
            await refused.to_asgi_response(app=None, request=request)(scope, receive, send)
            return
        await _run_once(app, request, send, key, body)

    return middleware
