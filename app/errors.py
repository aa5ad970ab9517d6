"""Domain errors and their RFC 9457 problem+json rendering.

Validation failures are 422 with `detail` (and `errors`) the FastAPI list
`[{"loc", "msg", "type"}]`, `loc` naming the key exactly as the client sent it (Litestar's
own answer is a 400 that loses the path inside a body array); every other problem has a
sentence in `detail`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    ValidationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.utils.scope.state import ScopeState
from sqlalchemy.exc import IntegrityError

from app.json_depth import MAX_JSON_DEPTH, TOO_DEEP, nesting_exceeds, type_depth

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://production-control.local/problems/"

Loc = list[str | int]

# PostgreSQL text cannot hold NUL characters. Text fields document this pattern; a JSON body
# is checked for NUL once, as a whole (decode_body), not by a regex per string.
NO_NUL = r"^[^\x00]*$"
NUL_MESSAGE = "must not contain NUL characters"
# The end of the text in Python's re and in ECMA-262 alike: Python's `$` also matches before
# a final newline, so a pattern ending in `$` would take "a@b.example\n" where JSON Schema does not.
END = r"(?![\s\S])"
# What str.strip() removes, spelled as code points: JSON Schema's \s (ECMA-262) is another set.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# What a text field takes in the OpenAPI document: NO_NUL (validated by msgspec) plus the
# "must not be blank" check done in code after it.
DOCUMENTED_TEXT = rf"^[{WHITESPACE}]*[^\x00{WHITESPACE}][^\x00]*$"
# pattern -> what a mismatch tells the client instead of the regex (see `plain_pattern`).
_PATTERN_MESSAGES = {NO_NUL: NUL_MESSAGE}


def plain_pattern(pattern: str, message: str) -> str:
    """`pattern`, with the sentence a mismatch reports in place of the regex itself."""
    _PATTERN_MESSAGES[pattern] = message
    return pattern


class FieldError(msgspec.Struct):
    loc: Loc
    msg: str
    type: str = "value_error"


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem document; `detail` is a sentence starting with what failed."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    instance: str | None = None


class ValidationProblem(msgspec.Struct):
    """A 422: `detail` is FastAPI's list of field errors (its clients read it), `errors` too."""

    type: str
    title: str
    status: int
    detail: list[FieldError]
    errors: list[FieldError]


class DomainError(Exception):
    status_code = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, errors: Sequence[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None


class NotFound(DomainError):
    status_code = 404
    title = "Not found"
    slug = "not-found"


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"
    slug = "conflict"


class BusinessRuleViolation(DomainError):
    status_code = 400
    title = "Business rule violated"
    slug = "business-rule"


class InputInvalid(DomainError):
    """422: the request is well-formed JSON but its content is not acceptable."""

    status_code = 422
    title = "Validation failed"
    slug = "validation"

    @classmethod
    def at(cls, loc: Loc, msg: str, type_: str = "value_error") -> InputInvalid:
        return cls(_sentence(loc, msg), [FieldError(loc=loc, msg=msg, type=type_)])


def _sentence(loc: Loc, msg: str) -> str:
    names = [str(p) for p in loc[1:] if isinstance(p, str)]
    indexes = [str(p) for p in loc[1:] if isinstance(p, int)]
    where = f"'{names[-1]}'" if names else f"the {loc[0]}"
    item = f" of item {'/'.join(indexes)}" if indexes else ""
    return f"Invalid value for {where}{item}: {msg}"


def problem_response(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    return Response(
        Problem(
            type=PROBLEM_TYPE_BASE + slug,
            title=title,
            status=status,
            detail=detail,
            errors=errors,
        ),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def validation_response(errors: list[FieldError]) -> Response[ValidationProblem]:
    return Response(
        ValidationProblem(
            type=PROBLEM_TYPE_BASE + "validation",
            title="Validation failed",
            status=422,
            detail=errors,
            errors=errors,
        ),
        status_code=422,
        media_type=PROBLEM_JSON,
    )


def domain_error_response(exc: DomainError) -> Response[Problem] | Response[ValidationProblem]:
    """The problem a domain error answers with: 422s in the validation shape (list detail)."""
    if exc.status_code == 422:
        return validation_response(exc.errors or [FieldError(loc=["body"], msg=exc.detail)])
    return problem_response(exc.status_code, exc.title, exc.detail, exc.slug, exc.errors)


def domain_error_handler(
    _: Request[Any, Any, Any], exc: DomainError
) -> Response[Problem] | Response[ValidationProblem]:
    return domain_error_response(exc)


# msgspec messages end with "- at `$[0].key`"; this splits the path into parts.
_AT_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_PART_RE = re.compile(r"\[(\d+)\]|\.([^.\[]+)|\[\"?([^\]\"]+)\"?\]")
_UNKNOWN_FIELD_RE = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_FIELD_RE = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def plain_message(msg: str) -> str:
    """A pattern is an implementation detail: say what is wrong instead of the regex."""
    for pattern, plain in _PATTERN_MESSAGES.items():
        if msg.endswith(f"matching regex {pattern!r}"):
            return plain
    return msg


def loc_from_msgspec(message: str, source: str = "body") -> tuple[Loc, str]:
    """Turn a msgspec validation message into (`loc`, short message)."""
    match = _AT_RE.match(message)
    assert match is not None
    msg, path = plain_message(match.group("msg")), match.group("path") or ""
    loc: Loc = [source]
    for index, key, quoted in _PATH_PART_RE.findall(path):
        loc.append(int(index) if index else (key or quoted))
    for pattern in (_UNKNOWN_FIELD_RE, _MISSING_FIELD_RE):
        if field := pattern.search(msg):
            loc.append(field.group("field"))
    return loc, msg


def _error_type(msg: str) -> str:
    if msg in _PATTERN_MESSAGES.values():
        return "string_pattern_mismatch"
    if msg.startswith("Object contains unknown field"):
        return "extra_forbidden"
    if msg.startswith("Object missing required field"):
        return "missing"
    if msg.startswith("Expected"):
        return "type_error"
    return "value_error"


JSON_INVALID = "JSON is malformed"


def json_invalid(reason: str, loc: Loc | None = None) -> FieldError:
    """A `json_invalid` error; msgspec and Litestar prefix their reasons already: said once."""
    while reason.startswith(f"{JSON_INVALID}: "):
        reason = reason.removeprefix(f"{JSON_INVALID}: ")
    return FieldError(loc=loc or ["body"], msg=f"{JSON_INVALID}: {reason}", type="json_invalid")


def decode_body(body: bytes, annotation: Any) -> Any:
    """A JSON request body as the handler's `data` annotation (with its Meta), strictly.

    No lax conversion (0/1 for booleans, "5" for 5, numbers for datetimes): the OpenAPI
    document states JSON types and the service takes exactly those. No client of the
    specification needs more; 1C's JSON sends typed values (its CSV/xlsx import converts cells
    itself, app/transfer/importer.py). One JSON Schema rule msgspec's strict mode does not
    follow: a number with a zero fraction (`7.0`) is an integer, so it is taken as one.
    """
    # Only a type that can hold deep nesting needs the check before decoding; for the rest
    # a successful decode proves the body shallow, and a failed one is checked below, before
    # the untyped decode that could recurse.
    decoder, depth = _decoder(annotation)
    if depth > MAX_JSON_DEPTH and nesting_exceeds(body):
        raise msgspec.DecodeError(TOO_DEEP)
    # JSON carries NUL only as the escape \u0000: a body without it needs no search.
    if b"\\u0000" in body:
        if nesting_exceeds(body):  # the untyped decode below recurses
            raise msgspec.DecodeError(TOO_DEEP)
        if (path := nul_path(msgspec.json.decode(body))) is not None:
            # As msgspec words a pattern mismatch, so it reaches the client like any other.
            raise msgspec.ValidationError(
                f"Expected `str` matching regex {NO_NUL!r} - at `${path}`"
            )
    try:
        return decoder.decode(body)
    except msgspec.ValidationError:
        if nesting_exceeds(body):
            raise msgspec.DecodeError(TOO_DEEP) from None
        # A typed decode stops at the first wrong type, even in a document that is not JSON
        # at all: malformed JSON is reported as such (DecodeError) first.
        document = msgspec.json.decode(body)
        return msgspec.convert(_integral_numbers_as_integers(document), annotation)


# annotation id -> (the annotation, its decoder, how deep it can nest). By identity, not
# hash: a handler's body annotation holds Litestar's Body(...) kwarg, whose hash walks it
# with dataclasses.asdict, and msgspec.json.decode(type=...) hashed it on every request (a
# fifth of a single-product request's CPU).
_DECODERS: dict[int, tuple[Any, msgspec.json.Decoder[Any], float]] = {}


def _decoder(annotation: Any) -> tuple[msgspec.json.Decoder[Any], float]:
    known = _DECODERS.get(id(annotation))
    if known is None or known[0] is not annotation:
        if len(_DECODERS) > 1024:  # handlers' annotations are few; anything else is a test
            _DECODERS.clear()
        known = (annotation, msgspec.json.Decoder(annotation), type_depth(annotation))
        _DECODERS[id(annotation)] = known
    return known[1], known[2]


def nul_path(value: Any, path: str = "") -> str | None:
    """The path (msgspec's notation) of the first string, value or key, holding NUL."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{index}]")) is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            step = f"{path}.{key}" if "." not in key and "[" not in key else f'{path}["{key}"]'
            if "\x00" in key:
                return step
            if (found := nul_path(item, step)) is not None:
                return found
    return None


def _integral_numbers_as_integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_numbers_as_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_numbers_as_integers(item) for key, item in value.items()}
    return value


def body_errors(route_request: Request[Any, Any, Any]) -> list[FieldError] | None:
    """Re-decode the (cached) request body against the handler's `data` type for exact paths."""
    handler = route_request.scope.get("route_handler")
    if handler is None:
        return None
    data_field = handler.parsed_data_field
    body = ScopeState.from_scope(route_request.scope).body
    if data_field is None or not isinstance(body, bytes | bytearray):
        return None
    try:
        decode_body(body, data_field.raw)
    except msgspec.ValidationError as exc:
        loc, msg = loc_from_msgspec(str(exc))
        return [FieldError(loc=loc, msg=msg, type=_error_type(msg))]
    except msgspec.DecodeError as exc:
        return [json_invalid(str(exc))]
    return None


def validation_exception_handler(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[ValidationProblem]:
    errors: list[FieldError] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        raw_source = item.get("source") or "body"
        source = str(getattr(raw_source, "value", raw_source))
        key = str(item.get("key") or "")
        message = plain_message(str(item.get("message") or "invalid value"))
        if source == "body":
            precise = body_errors(request)
            if precise:
                errors.extend(precise)
                continue
            loc: Loc = ["body", *(key.split(".") if key and key != "data" else [])]
        else:
            loc = [source, key] if key else [source]
        errors.append(FieldError(loc=loc, msg=message, type=_error_type(message)))
    if not errors:
        detail = str(exc.detail)
        malformed = detail.startswith(JSON_INVALID) or "decode" in detail.lower()
        errors.append(json_invalid(detail) if malformed else FieldError(loc=["body"], msg=detail))
    return validation_response(errors)


def _too_large(request: Request[Any, Any, Any]) -> str:
    handler = request.scope.get("route_handler")
    limit = (
        handler.resolve_request_max_body_size() if isinstance(handler, HTTPRouteHandler) else None
    )
    return (
        f"Request body too large: the limit is {limit} bytes" if limit else "Request body too large"
    )


def http_exception_handler(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[Problem] | Response[ValidationProblem]:
    status = exc.status_code
    detail = str(exc.detail)
    if status == 400:
        # Litestar raises plain 400s for bodies it cannot parse at all: a JSON document, or
        # a multipart form whose framing is broken.
        if request.content_type[0] == "multipart/form-data":
            return validation_response(
                [
                    FieldError(
                        loc=["body"],
                        msg=f"The multipart form cannot be parsed: {detail}",
                        type="multipart_invalid",
                    )
                ]
            )
        return validation_response([json_invalid(detail)])
    if isinstance(exc, NotFoundException) and detail == "Not Found":
        detail = f"No resource at {request.method} {request.url.path}"
    if status == 413 and detail == "Request Entity Too Large":
        detail = _too_large(request)
    titles = {
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        413: "Request body too large",
        415: "Unsupported media type",
        429: "Too many requests",
        503: "Service unavailable",
    }
    title = titles.get(status, "Error")
    return problem_response(
        status,
        title,
        detail,
        title.lower().replace(" ", "-"),
        headers=dict(exc.headers) if exc.headers else None,
    )


# SQLSTATEs a concurrent writer can cause after our own checks passed (a check-then-insert
# race): unique_violation and foreign_key_violation. Anything else is a bug -> 500.
_CONFLICT_SQLSTATES = {
    "23505": "another request wrote the same unique value first",
    "23503": "a row it refers to was removed meanwhile",
}


def integrity_error_handler(
    request: Request[Any, Any, Any], exc: IntegrityError
) -> Response[Problem]:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate not in _CONFLICT_SQLSTATES:
        return internal_error_handler(request, exc)
    constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
    what = f" ({constraint})" if constraint else ""
    return problem_response(
        409,
        "Conflict",
        f"Conflicting concurrent write: {_CONFLICT_SQLSTATES[sqlstate]}{what}; nothing was written",
        "conflict",
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal server error",
        "The server failed to handle this request; it has been logged.",
        "internal",
    )


exception_handlers: dict[Any, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_exception_handler,
    HTTPException: http_exception_handler,
    IntegrityError: integrity_error_handler,
    Exception: internal_error_handler,
}
