"""The parts of the OpenAPI document Litestar cannot know, stated as the service enforces them.

Each function corrects one thing, after app/openapi.py has put the exact body schemas in:

* `declare_api_key`: the `X-API-Key` scheme on every operation the API-key middleware guards,
  with the 401 problem it answers;
* `exact_parameters`: integer parameters' bounds as they are checked: `minimum: 1`, not
  `exclusiveMinimum: 0.0`;
* `readable_names`: `BatchPage` instead of `Page_app.batches.schemas.BatchListItem_`;
* `add_examples`: the request examples of app/openapi_examples.py, and for every error
  response a problem+json example of that status.

tests/unit/test_openapi.py holds the document to each of these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from app.config import get_settings
from app.errors import PROBLEM_JSON, PROBLEM_TYPE_BASE
from app.middleware import OPEN_PATHS
from app.openapi_examples import (
    BODY_EXAMPLES,
    PARAMETER_EXAMPLES,
    PATH_PARAMETER_EXAMPLES,
)

API_KEY_SCHEME = "ApiKeyAuth"
SCHEMA_REF = "#/components/schemas/"
_METHODS = ("get", "put", "post", "delete", "patch")


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def correct_document(document: dict[str, Any]) -> None:
    declare_api_key(document)
    exact_parameters(document)
    readable_names(document)
    add_examples(document)


def declare_api_key(document: dict[str, Any]) -> None:
    """Every path the middleware does not leave open (app/middleware.py OPEN_PATHS) needs a
    valid key once any key is configured (API_KEYS or the api_keys table)."""
    document.setdefault("components", {})["securitySchemes"] = {
        API_KEY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": (
                "A key from API_KEYS or `python -m app.api_keys create <name>`. Required "
                "once any key exists; an api with no keys runs open only when "
                "ALLOW_ANONYMOUS=true."
            ),
        }
    }
    for path, _, operation in _operations(document):
        if path.startswith(OPEN_PATHS):
            continue
        operation["security"] = [{API_KEY_SCHEME: []}]
        responses = operation.setdefault("responses", {})
        responses["401"] = {
            "description": "The X-API-Key header is missing or not a valid key",
            "headers": {
                "WWW-Authenticate": {
                    "description": 'How to authenticate: `ApiKey header="X-API-Key"`',
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
            "content": {PROBLEM_JSON: {"schema": {"$ref": SCHEMA_REF + "Problem"}}},
        }
        operation["responses"] = dict(sorted(responses.items()))


def _exact(schema: dict[str, Any]) -> None:
    if schema.get("type") == "integer":
        if "exclusiveMinimum" in schema:
            schema["minimum"] = math.floor(schema.pop("exclusiveMinimum")) + 1
        if "exclusiveMaximum" in schema:
            schema["maximum"] = math.ceil(schema.pop("exclusiveMaximum")) - 1
        for bound in ("minimum", "maximum"):
            if bound in schema:
                schema[bound] = int(schema[bound])


def exact_parameters(document: dict[str, Any]) -> None:
    """An integer parameter's bounds as integers: Litestar writes the ids' `gt=0` as
    `exclusiveMinimum: 0.0`, the service takes 1..2^31-1. (An optional filter keeps its
    `null`: the service reads `?is_closed=null` as no filter.)"""
    for _, _, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            _exact(parameter["schema"])


_GENERIC_PAGE = re.compile(r"^Page\[(?P<item>\w+)\]$")


def readable_names(document: dict[str, Any]) -> None:
    """`Page[BatchListItem]` -> `BatchPage`: one readable name per page component."""
    schemas = document.get("components", {}).get("schemas", {})
    renames: dict[str, str] = {}
    for name, schema in schemas.items():
        match = _GENERIC_PAGE.match(str(schema.get("title", "")))
        if match is None:
            continue
        new = re.sub(r"(Out|ListItem)$", "", match.group("item")) + "Page"
        if new in schemas and new != name:
            raise RuntimeError(f"OpenAPI component {new} exists twice: rename one")
        renames[name] = new
    for old, new in renames.items():
        schemas[new] = {**schemas.pop(old), "title": new}
    refs = {SCHEMA_REF + old: SCHEMA_REF + new for old, new in renames.items()}

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in refs:
                node["$ref"] = refs[node["$ref"]]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    rewrite(document)
    document["components"]["schemas"] = dict(sorted(schemas.items()))


def add_examples(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and (examples := BODY_EXAMPLES.get((method, path))):
            body["examples"] = examples
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            example = PATH_PARAMETER_EXAMPLES.get((path, name), PARAMETER_EXAMPLES.get(name))
            if example is not None:
                parameter["example"] = example
        for status, response in operation.get("responses", {}).items():
            media = response.get("content", {}).get(PROBLEM_JSON)
            if media is not None and int(status) >= 400:
                media["example"] = _problem_example(int(status), method, path, operation)


_TITLES = {
    400: ("business-rule", "Business rule violated"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    409: ("conflict", "Conflict"),
    413: ("request-body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    503: ("service-unavailable", "Service unavailable"),
}


def _not_found(path: str) -> str:
    if "{task_id}" in path:
        return "Task not found (id 0b7f2c1e-6a0d-4d5e-9d3a-2f4c8e1a7b90)"
    if "{delivery_id}" in path:
        return "Delivery not found (id 12, webhook 3)"
    if "{webhook_id}" in path:
        return "Webhook not found (id 3)"
    if "{work_center_id}" in path:
        return "Work center not found (id 2)"
    return "Batch not found (id 7)"


def _detail(status: int, method: str, path: str) -> str:
    if status == 400:
        return "Batch 7 is closed"
    if status == 401:
        return "A valid X-API-Key header is required"
    if status == 404:
        return _not_found(path)
    if status == 409:
        if (method, path) == ("post", "/api/v1/batches"):
            return "Batch 22222 of 2024-01-30 already exists"
        if path.endswith("/cancel"):
            return "Task 0b7f2c1e-6a0d-4d5e-9d3a-2f4c8e1a7b90 already finished with status SUCCESS"
        return (
            "Request with this Idempotency-Key is still in progress; send it again once the "
            "first one has finished"
        )
    if status == 413:
        return f"Request body too large: the limit is {get_settings().max_body_size} bytes"
    if status == 415:
        return "Unsupported media type text/plain: send the body as application/json"
    return "File storage is unavailable; try again later"


def _problem_example(
    status: int, method: str, path: str, operation: dict[str, Any]
) -> dict[str, Any]:
    if status == 422:
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            loc: list[str | int] = ["body"]
            msg, kind = "JSON is malformed: trailing characters (byte 12)", "json_invalid"
            if path == "/api/v1/batches":
                loc, msg, kind = ["body", 0, "Смена"], "Expected `str`, got `int`", "type_error"
        else:
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            loc = ["path", names[0]] if names else ["query", "limit"]
            msg, kind = "Expected `int` <= 2147483647", "type_error"
            if names == ["task_id"]:
                msg, kind = "Invalid UUID", "value_error"
            elif not names:
                msg = "Expected `int` <= 1000"
        errors = [{"loc": loc, "msg": msg, "type": kind}]
        return {
            "type": PROBLEM_TYPE_BASE + "validation",
            "title": "Validation failed",
            "status": 422,
            "detail": errors,
            "errors": errors,
        }
    slug, title = _TITLES.get(status, ("error", "Error"))
    return {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": _detail(status, method, path),
    }
