"""The OpenAPI document tells the truth: what it states is what the service enforces.

Built from the app without services (create_app connects to nothing); the behaviour behind
each statement is exercised by the API tests and by schemathesis (tests/api/test_contract.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect
import pytest
from jsonschema import Draft202012Validator
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg

from app.errors import PROBLEM_JSON, PROBLEM_TYPE_BASE
from app.main import create_app
from app.middleware import OPEN_PATHS
from app.openapi import _body_types as body_types

METHODS = ("get", "put", "post", "delete", "patch")
MAX_INT32 = 2**31 - 1


@pytest.fixture(scope="module")
def app() -> Litestar:
    return create_app()


@pytest.fixture(scope="module")
def document(app: Litestar) -> dict[str, Any]:
    # The document as /schema/openapi.json serves it, corrections included.
    served: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return json.loads(json.dumps(served, default=str))


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    # The components travel with the schema so its $refs resolve.
    return Draft202012Validator({**schema, "components": document["components"]})


def walk(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


# --- authentication ---------------------------------------------------------------------


def test_the_api_key_scheme_is_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert list(schemes) == ["ApiKeyAuth"]
    assert {k: v for k, v in schemes["ApiKeyAuth"].items() if k != "description"} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert "security" not in document  # per operation: /health and /ready are open


def test_every_api_operation_requires_the_key_and_documents_its_401(
    document: dict[str, Any],
) -> None:
    for path, method, operation in operations(document):
        if path.startswith("/api/v1"):
            assert operation.get("security") == [{"ApiKeyAuth": []}], (method, path)
            unauthorized = operation["responses"]["401"]
            assert unauthorized["content"][PROBLEM_JSON]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }, (method, path)
            assert "WWW-Authenticate" in unauthorized["headers"], (method, path)
        else:
            # What the middleware leaves open is what the document leaves open.
            assert path.startswith(OPEN_PATHS), path
            assert "security" not in operation, (method, path)
            assert "401" not in operation["responses"], (method, path)


# --- errors -----------------------------------------------------------------------------


def test_every_error_response_is_the_problem_the_service_sends(
    document: dict[str, Any],
) -> None:
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            expected = "ValidationProblem" if status == "422" else "Problem"
            assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
            assert response["content"][PROBLEM_JSON]["schema"] == {
                "$ref": f"#/components/schemas/{expected}"
            }, (method, path, status)


def test_no_schema_has_litestars_own_error_shape(document: dict[str, Any]) -> None:
    for where, node in walk(document):
        properties = node.get("properties")
        if isinstance(properties, dict):
            assert {"status_code", "extra"} - set(properties), where


def test_problem_examples_are_problems_of_their_status(document: dict[str, Any]) -> None:
    seen = 0
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            media = response["content"][PROBLEM_JSON]
            examples = [e["value"] for e in media.get("examples", {}).values()]
            if "example" in media:
                examples.append(media["example"])
            assert examples, (method, path, status)
            for example in examples:
                seen += 1
                assert example["status"] == int(status), (method, path, status)
                assert example["type"].startswith(PROBLEM_TYPE_BASE), (method, path, status)
                check = validator(document, media["schema"])
                assert not list(check.iter_errors(example)), (method, path, status)
    assert seen
    # Component-level examples would be Litestar's random strings: none are kept.
    for name in ("Problem", "ValidationProblem", "FieldError"):
        component = document["components"]["schemas"][name]
        assert not [w for w, node in walk(component) if "examples" in node], name


# --- request bodies ---------------------------------------------------------------------


def _struct_types(annotation: Any) -> Iterator[type[msgspec.Struct]]:
    """Every Struct type a body annotation decodes, nested ones included."""
    seen: set[type] = set()
    pending = [msgspec.inspect.type_info(annotation)]
    while pending:
        info = pending.pop()
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in seen:
                continue
            seen.add(info.cls)
            yield info.cls
            pending.extend(field.type for field in info.fields)
        for attribute in ("item_type", "types", "key_type", "value_type"):
            value = getattr(info, attribute, None)
            if isinstance(value, tuple):
                pending.extend(value)
            elif value is not None:
                pending.append(value)


def test_strict_body_structs_forbid_additional_properties(
    app: Litestar, document: dict[str, Any]
) -> None:
    components = document["components"]["schemas"]
    checked = 0
    for annotation in body_types(app).values():
        for struct in _struct_types(annotation):
            forbids = struct.__struct_config__.forbid_unknown_fields
            assert components[struct.__name__].get("additionalProperties", True) is not forbids
            checked += forbids
    assert checked >= 10


def test_required_body_fields_are_required(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    assert set(components["WebhookCreate"]["required"]) == {"url", "events", "secret_key"}
    for name, component in components.items():
        for field in component.get("required", []):
            assert field in component["properties"], (name, field)


def _body_array_sizes(annotation: Any) -> list[tuple[int | None, int | None]]:
    """(min, max) of a body that is an array, or may be one: msgspec enforces them (the app's
    TypedJsonBody decodes every JSON body), from the Meta of the handler's annotation."""
    try:
        info = msgspec.inspect.type_info(annotation)
    except TypeError:  # a multipart form
        return []
    alternatives = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return [
        (alternative.min_length, alternative.max_length)
        for alternative in alternatives
        if isinstance(alternative, msgspec.inspect.ListType) and alternative.max_length is not None
    ]


def test_body_array_sizes_are_those_enforced(app: Litestar, document: dict[str, Any]) -> None:
    checked = 0
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler) or handler.parsed_data_field is None:
                continue
            sizes = _body_array_sizes(handler.parsed_data_field.raw)
            if not sizes:
                continue
            path = route.path_format.rstrip("/")
            for method in handler.http_methods:
                media = document["paths"][path][method.lower()]["requestBody"]["content"]
                schema = media["application/json"]["schema"]
                arrays = [s for s in [schema, *schema.get("anyOf", [])] if "items" in s]
                assert [(s.get("minItems"), s["maxItems"]) for s in arrays] == sizes, (
                    method,
                    path,
                )
                checked += 1
    assert checked >= 2  # the 1C feed and the bulk products


# --- parameters -------------------------------------------------------------------------


def _parameter_constraints(app: Litestar) -> Iterator[tuple[str, str, str, ParameterKwarg]]:
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            for name, field in handler.parsed_fn_signature.parameters.items():
                kwarg = field.kwarg_definition
                if isinstance(kwarg, ParameterKwarg):
                    for method in handler.http_methods:
                        path = route.path_format.rstrip("/") or "/"
                        yield path, method.lower(), kwarg.query or kwarg.header or name, kwarg


def test_parameter_bounds_are_those_enforced(app: Litestar, document: dict[str, Any]) -> None:
    checked = 0
    for path, method, name, kwarg in _parameter_constraints(app):
        if path not in document["paths"]:  # the docs' own routes
            continue
        expected_min = kwarg.ge if kwarg.gt is None else kwarg.gt + 1
        expected_max = kwarg.le if kwarg.lt is None else kwarg.lt - 1
        if expected_min is None and expected_max is None:
            continue
        parameters = document["paths"][path][method].get("parameters", [])
        (parameter,) = [p for p in parameters if p["name"] == name]
        schema = parameter["schema"]
        checked += 1
        # Integers stay integers (1, not 1.0 or exclusiveMinimum 0.0): `minimum: 1` is exact.
        types = {schema.get("type"), *(b.get("type") for b in schema.get("oneOf", []))}
        assert "integer" in types, (path, method, name, schema)
        assert (schema.get("minimum"), schema.get("maximum")) == (expected_min, expected_max)
        assert all(isinstance(schema.get(k), int | None) for k in ("minimum", "maximum"))
        assert "exclusiveMinimum" not in schema
        assert "exclusiveMaximum" not in schema
    assert checked >= 30


def test_ids_limits_and_offsets(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            name, schema = parameter["name"], parameter["schema"]
            if parameter["in"] == "path" and name.endswith("_id") and name != "task_id":
                assert (schema["type"], schema["minimum"], schema["maximum"]) == (
                    "integer",
                    1,
                    MAX_INT32,
                ), (method, path, name)
            if name == "task_id":
                assert (schema["type"], schema["format"]) == ("string", "uuid")
            if name == "limit":
                bound = 100 if "/webhooks" in path else 1000
                assert (schema["minimum"], schema["maximum"]) == (1, bound), (method, path)
            if name == "offset":
                assert (schema["minimum"], schema["maximum"]) == (0, MAX_INT32)


# --- examples ---------------------------------------------------------------------------


def _body_examples(media: dict[str, Any]) -> list[Any]:
    examples = [e["value"] for e in media.get("examples", {}).values()]
    return [*examples, media["example"]] if "example" in media else examples


def test_every_json_body_has_examples_its_schema_accepts(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None:
            continue
        examples = _body_examples(media)
        assert examples, (method, path)
        check = validator(document, media["schema"])
        for example in examples:
            assert not list(check.iter_errors(example)), (method, path, example)


def test_the_1c_feed_example_is_a_real_1c_batch(document: dict[str, Any]) -> None:
    media = document["paths"]["/api/v1/batches"]["post"]["requestBody"]["content"]
    examples = _body_examples(media["application/json"])
    russian = [e for e in examples if "НомерПартии" in e[0]]
    assert russian
    assert set(russian[0][0]) == {
        "СтатусЗакрытия",
        "ПредставлениеЗаданияНаСмену",
        "РабочийЦентр",
        "Смена",
        "Бригада",
        "НомерПартии",
        "ДатаПартии",
        "Номенклатура",
        "КодЕКН",
        "ИдентификаторРЦ",
        "ДатаВремяНачалаСмены",
        "ДатаВремяОкончанияСмены",
    }
    # An English example uses each field once, under its English key.
    english = [e for e in examples if "batch_number" in e[0]]
    assert english
    assert not [k for k in english[0][0] if not k.isascii()]


def test_filters_have_examples_their_schema_accepts(document: dict[str, Any]) -> None:
    checked = 0
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query" or parameter["name"] in ("offset", "limit"):
                continue
            assert "examples" in parameter or "example" in parameter, (path, parameter["name"])
            values = [e["value"] for e in parameter.get("examples", {}).values()]
            for value in [*values, *([parameter["example"]] if "example" in parameter else [])]:
                assert Draft202012Validator(
                    {**parameter["schema"], "components": document["components"]}
                ).is_valid(value), (method, path, parameter["name"], value)
                checked += 1
    assert checked >= 15


def test_no_generated_example_strings(document: dict[str, Any]) -> None:
    # Litestar's generated examples are 20 random letters (e.g. "DwEkQQHiBrmXZcSFtoJx").
    random_looking = re.compile(r"\b[A-Za-z]{20}\b")
    examples = [
        json.dumps(node[key], ensure_ascii=False)
        for _, node in walk(document)
        for key in ("example", "examples")
        if key in node
    ]
    assert examples
    assert not [e for e in examples if random_looking.search(e)]


# --- names and shapes -------------------------------------------------------------------


def test_schema_names_are_readable(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    assert {"BatchPage", "ProductPage", "TaskPage", "WorkCenterPage"} <= names
    assert not [n for n in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", n)]
    text = json.dumps(document)
    for name in names:
        assert f"#/components/schemas/{name}" in text, f"{name} is referenced nowhere"


def test_one_name_per_shape(document: dict[str, Any]) -> None:
    def shape(schema: dict[str, Any]) -> str:
        loose = {k: v for k, v in schema.items() if k not in ("title", "description")}
        return json.dumps(loose, sort_keys=True)

    names: dict[str, list[str]] = {}
    for name, schema in document["components"]["schemas"].items():
        names.setdefault(shape(schema), []).append(name)
    assert not [group for group in names.values() if len(group) > 1]


def test_pages_list_their_items(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for page, item in (
        ("BatchPage", "BatchListItem"),
        ("ProductPage", "ProductOut"),
        ("TaskPage", "TaskOut"),
        ("WorkCenterPage", "WorkCenterOut"),
    ):
        assert schemas[page]["properties"]["items"]["items"] == {
            "$ref": f"#/components/schemas/{item}"
        }
        assert {"items", "total", "offset", "limit"} <= set(schemas[page]["required"])


# --- tasks ------------------------------------------------------------------------------


def test_task_result_and_error_are_nullable_objects(document: dict[str, Any]) -> None:
    task = document["components"]["schemas"]["TaskOut"]
    for field in ("result", "error"):
        schema = task["properties"][field]
        check = validator(document, schema)
        assert check.is_valid(None), field
        assert check.is_valid({"batch_id": 1, "total": 3}), field
        for wrong in ("text", 1, [1]):
            assert not check.is_valid(wrong), (field, wrong)


def test_null_matches_one_branch_of_every_nullable_one_of(document: dict[str, Any]) -> None:
    # A nullable value is `oneOf: [X, {"type": "null"}]`: with an X that admits null too
    # (`Any | None` gives `{}`), a null value would be invalid against the oneOf.
    checked = 0
    for where, node in walk(document):
        branches = node.get("oneOf")
        if not isinstance(branches, list) or {"type": "null"} not in branches:
            continue
        checked += 1
        matching = [b for b in branches if validator(document, b).is_valid(None)]
        assert len(matching) == 1, where
    assert checked >= 10


def test_task_events_are_an_event_stream(document: dict[str, Any]) -> None:
    ok = document["paths"]["/api/v1/tasks/{task_id}/events"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
