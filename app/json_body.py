"""The gate every JSON request body passes before a decoder sees it.

Litestar parses any body of a JSON route as JSON, whatever its Content-Type, and msgspec
raises UnicodeDecodeError (invalid UTF-8) or RecursionError (deep nesting) from inside the
decoders, which reach the client as 500s. Here, once per request and before the route:
a Content-Type that is not JSON -> 415; a leading UTF-8 BOM (1C's HTTP client writes one) is
dropped; invalid UTF-8 or nesting deeper than MAX_JSON_DEPTH -> 422 `json_invalid`. The
checked body is left in the connection state, where the decoders read it.
"""

from __future__ import annotations

import codecs
import re
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

MAX_JSON_DEPTH = 64

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")


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


def nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects nest deeper than `limit`, without a recursive parser.

    Escapes and strings are removed (brackets inside strings do not count), then innermost
    `[]`/`{}` pairs are peeled off one level per pass, all in C: a 100,000-item bulk body
    takes two passes. Unbalanced brackets are left for the JSON decoder to report.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Down to quotes and brackets first: the strings left are mostly `""` (a feed of 1,000
    # batches has 24,000), dropped by one replace instead of one regex match each. Dropping
    # a closing quote with the next opening one merges two strings that had nothing between.
    skeleton = _ESCAPE.sub(b"", body).translate(None, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    brackets = _STRING.sub(b"", skeleton)
    for _ in range(limit):
        peeled = _INNERMOST_PAIR.sub(b"", brackets)
        if not peeled or peeled == brackets:
            return False
        brackets = peeled
    return _INNERMOST_PAIR.search(brackets) is not None


def check_json_body(body: bytes) -> bytes:
    """The body without a UTF-8 BOM; a 422 for invalid UTF-8 or too deep nesting."""
    body = body.removeprefix(codecs.BOM_UTF8)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationException(
            f"{JSON_INVALID}: invalid UTF-8 at byte {exc.start}; send UTF-8 text"
        ) from None
    if nesting_exceeds(body):
        raise ValidationException(
            f"{JSON_INVALID}: arrays and objects nest deeper than {MAX_JSON_DEPTH} levels"
        )
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
