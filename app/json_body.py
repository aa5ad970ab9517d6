"""The gate every JSON request body passes before a decoder sees it.

Litestar parses any body of a JSON route as JSON, whatever its Content-Type, and msgspec
raises UnicodeDecodeError (invalid UTF-8) from inside the decoders, which reaches the client
as a 500. Here, once per request and before the route: a Content-Type that is not JSON ->
415; a leading UTF-8 BOM (1C's HTTP client writes one) is dropped; invalid UTF-8 -> 422
`json_invalid`. The checked body is left in the connection state, where the decoders read
it. Nesting too deep is checked where the body is decoded (app.errors.decode_body), only
when the type could hold it (app.json_depth).
"""

from __future__ import annotations

import codecs
from typing import Any

from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from app.errors import JSON_INVALID


def _expects_json(handler: Any) -> bool:
    if not isinstance(handler, HTTPRouteHandler) or handler.parsed_data_field is None:
        return False
    kwarg = handler.parsed_data_field.kwarg_definition
    media_type = kwarg.media_type if isinstance(kwarg, BodyKwarg) else RequestEncodingType.JSON
    return media_type == RequestEncodingType.JSON


def is_json_media_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_json_body(body: bytes) -> bytes:
    """The body without a UTF-8 BOM; a 422 for invalid UTF-8."""
    body = body.removeprefix(codecs.BOM_UTF8)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationException(
            f"{JSON_INVALID}: invalid UTF-8 at byte {exc.start}; send UTF-8 text"
        ) from None
    return body


def json_body_gate(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _expects_json(scope.get("route_handler")):
            request: Request[Any, Any, Any] = Request(scope, receive)
            content_type = request.content_type[0]
            # No Content-Type at all is read as JSON, as FastAPI does; another type is not.
            if request.headers.get("content-type") is not None and not is_json_media_type(
                content_type
            ):
                raise HTTPException(
                    status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                    detail=(
                        f"Unsupported media type {content_type or '(empty)'}: send the body as "
                        "application/json"
                    ),
                )
            ScopeState.from_scope(scope).body = check_json_body(await request.body())
        await app(scope, receive, send)

    return middleware
