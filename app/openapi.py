"""Make the generated OpenAPI document say exactly what the service accepts and answers.

Litestar's schema generation loses what msgspec enforces on request bodies (constraints on
list items such as a unique code's length and NUL ban, `forbid_unknown_fields`), documents a
400 validation answer the service never gives (validation is a 422 here), and leaves out the
413/415 every JSON body can get. Contract fuzzers and generated clients read this document,
so it is corrected once, after the routes are registered:

* request bodies and their components are msgspec's own JSON Schema of the types it decodes;
* every JSON body operation documents 413 and 415;
* the 400 Litestar adds to every operation with parameters is dropped unless a route
  documents its own (business rules);
* the SSE endpoint is documented as `text/event-stream`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler

from app.errors import DOCUMENTED_TEXT, PROBLEM_JSON
from app.openapi_document import correct_document
from app.schemas import NOT_BLANK_MARK

PROBLEM_REF = "#/components/schemas/Problem"
METHODS = ("get", "put", "post", "delete", "patch", "head")
BODY_KEYWORDS = ("description", "minItems", "maxItems")
# Each event of GET /tasks/{id}/events, as schemathesis and SSE clients read it.
PROGRESS_EVENT = {
    "type": "object",
    "properties": {
        "event": {"const": "progress"},
        "id": {"type": "string", "description": "progress.current"},
        "data": {"type": "string", "description": "the task as GET /tasks/{task_id}, JSON"},
    },
    "required": ["event", "data"],
}


def _body_types(app: Litestar) -> dict[tuple[str, str], Any]:
    """(path, method) -> the `data` type of every route whose body msgspec decodes."""
    types: dict[tuple[str, str], Any] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler) or handler.parsed_data_field is None:
                continue
            annotation = handler.parsed_data_field.raw  # with its msgspec.Meta
            try:
                msgspec.json.schema(annotation)
            except TypeError:  # a multipart form dataclass holding an UploadFile
                continue
            for method in handler.http_methods:
                types[(route.path_format.rstrip("/") or "/", method.lower())] = annotation
    return types


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }


def _documents_problem(response: dict[str, Any]) -> bool:
    return any(
        media.get("schema", {}).get("$ref") == PROBLEM_REF
        for media in response.get("content", {}).values()
    )


def finish_openapi(app: Litestar) -> None:
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    components = document.setdefault("components", {}).setdefault("schemas", {})
    body_types = _body_types(app)
    body_schemas, definitions = msgspec.json.schema_components(
        body_types.values(), ref_template="#/components/schemas/{name}"
    )
    for name, definition in definitions.items():
        if name in components:
            components[name] = definition
    exact_bodies = dict(zip(body_types, body_schemas, strict=True))
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            json_body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if json_body is not None and (exact := exact_bodies.get((path, method))) is not None:
                # Body(...) keywords (description, array sizes) that Litestar itself enforces.
                kept = {k: v for k, v in json_body["schema"].items() if k in BODY_KEYWORDS}
                json_body["schema"] = {**exact, **kept}
            responses = operation.setdefault("responses", {})
            if "400" in responses and not _documents_problem(responses["400"]):
                del responses["400"]
            if json_body is not None:
                responses.setdefault("413", _problem("The body is larger than the limit"))
                responses.setdefault("415", _problem("The body is not application/json (or +json)"))
            if path.endswith("/events") and "200" in responses:
                responses["200"]["content"] = {"text/event-stream": {"schema": PROGRESS_EVENT}}
    # Before correct_document: it finds the body components under their class names.
    state_rules_checked_in_code(app, document)
    # Authentication, exact parameters, readable names, examples: app/openapi_document.py.
    correct_document(document)


# --- Input rules checked in code, stated in the document ---------------------------------------
#
# Some rules of a body are checked after msgspec decodes it (1C synonym keys, blank text, a
# required upload), and the document must state them too or contract fuzzers and generated
# clients see a different API. A type states them where msgspec cannot:
# * a class attribute `__json_schema_extra__`, merged into the class's component (any struct or
#   dataclass reachable from a request body, multipart forms included);
# * `NOT_BLANK_MARK` in a field's `extra_json_schema` (app.schemas): its documented pattern is
#   DOCUMENTED_TEXT, NO_NUL plus the "must not be blank" check (msgspec's own pattern keyword
#   would win over an extra one).


def _classes_in(annotation: Any) -> Iterator[type]:
    """The struct and dataclass types reachable from a request body annotation."""
    try:
        pending: list[Any] = [msgspec.inspect.type_info(annotation)]
    except TypeError:
        return
    seen: set[type] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, msgspec.inspect.StructType | msgspec.inspect.DataclassType):
            if node.cls in seen:
                continue
            seen.add(node.cls)
            yield node.cls
        for value in msgspec.structs.astuple(node):
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, msgspec.inspect.Type | msgspec.inspect.Field):
                    pending.append(item)


def _mark_blank_rule(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.pop(NOT_BLANK_MARK, False):
            schema["pattern"] = DOCUMENTED_TEXT
        for value in schema.values():
            _mark_blank_rule(value)
    elif isinstance(schema, list):
        for value in schema:
            _mark_blank_rule(value)


def state_rules_checked_in_code(app: Litestar, document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            data = getattr(handler, "parsed_data_field", None)
            for cls in _classes_in(data.annotation) if data is not None else ():
                extra = getattr(cls, "__json_schema_extra__", None)
                if extra is not None and cls.__name__ in components:
                    components[cls.__name__] = {**components[cls.__name__], **extra}
    _mark_blank_rule(document)
