"""Small pieces every controller uses: the session dependency and documented error responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.typing import FieldDefinition
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.errors import PROBLEM_JSON, Problem, ValidationProblem, decode_body
from app.idempotency import request_session


async def provide_session(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back on error.

    Under an Idempotency-Key the middleware owns the transaction: the handler works in its
    session, and it commits the work together with the stored response.
    """
    if (owned := request_session(request.scope)) is not None:
        yield owned
        return
    async with transaction() as session:
        yield session


def problem(description: str) -> ResponseSpec:
    # No generated examples (random strings): app/openapi_document.py gives real ones.
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )


NOT_FOUND = {404: problem("The resource does not exist")}
CONFLICT = {
    409: problem(
        "The request conflicts with existing data, or one with the same Idempotency-Key is "
        "still in progress; nothing was written"
    )
}
RULE = {400: problem("A business rule forbids the operation")}
INVALID = {
    422: ResponseSpec(
        data_container=ValidationProblem,
        description=(
            "Validation failed: `detail` (and `errors`) lists `{loc, msg, type}`, `loc` naming "
            "the key as sent"
        ),
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )
}

Db = NamedDependency[AsyncSession]

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference, Schema


class TypedJsonBody(AbstractDTO[Any]):
    """Every JSON body (the app's `dto`): decoded straight into the handler's `data` type.

    Litestar by default decodes a body into dicts and lists, then converts those into the
    annotated type leniently (0/1 taken for booleans, "5" for 5), which the OpenAPI document
    does not say. Here msgspec decodes the bytes against the type strictly (`decode_body`),
    which also builds the structs directly: for a 100,000-item array that saves 100,000 dicts
    the cyclic garbage collector scans over and over. Same 422s (the validation handler
    re-decodes the body for the exact error paths), same OpenAPI. Constraints of the body as a
    whole go in a `msgspec.Meta` of its type: Litestar does not apply `Body(...)` ones here.
    """

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()  # no transfer model: the annotated type is decoded as it is

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        # Nothing to build: decode_bytes reads the type from the handler's `data` field.
        if field_definition.name != "data":
            raise TypeError("TypedJsonBody decodes request bodies; set return_dto=None")

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(field_definition)

    def decode_bytes(self, value: bytes) -> Any:
        data_field = self.asgi_connection.route_handler.parsed_data_field
        assert data_field is not None  # Litestar uses a data DTO only for handlers with `data`
        try:
            return decode_body(value, data_field.raw)
        except msgspec.ValidationError as exc:
            body_error = {"message": str(exc), "key": "data", "source": "body"}
            raise ValidationException(
                "Validation failed", extra=[*self._path_errors(), body_error]
            ) from exc
        except msgspec.DecodeError as exc:
            raise ValidationException(f"JSON is malformed: {exc}") from exc

    def _path_errors(self) -> list[dict[str, str]]:
        """The path parameters' errors: the body is decoded before Litestar validates them,
        and a bad id is named first, as it is when the body is fine."""
        connection = self.asgi_connection
        errors = []
        for field in msgspec.structs.fields(connection.route_handler.signature_model):
            if field.name not in connection.path_params:
                continue
            try:
                msgspec.convert(connection.path_params[field.name], field.type, strict=False)
            except msgspec.ValidationError as exc:
                errors.append({"message": str(exc), "key": field.name, "source": "path"})
        return errors
