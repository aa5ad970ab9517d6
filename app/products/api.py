"""HTTP for products: one code, or a bulk array of up to 100,000."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Body, FromQuery, Parameter
from litestar.status_codes import HTTP_201_CREATED

from app.api_support import CONFLICT, INVALID, NOT_FOUND, RULE, Db
from app.db import driver_connection, statement_connection, transaction
from app.idempotency import IdempotentOperation, request_session
from app.products import service
from app.products.schemas import (
    MAX_BULK_PRODUCTS,
    BatchProductPage,
    BulkProductsResult,
    ProductInput,
    ProductOut,
)
from app.schemas import Limit, Offset, Page, PositiveId, TextFilter


class ProductController(Controller):
    path = "/api/v1/products"
    tags = ["products"]

    @post(
        "/",
        summary="Add one product or many",
        description=(
            "One object -> 201 the product (409 duplicate code, 404 unknown batch, 400 closed "
            "batch). An array (up to 100,000) -> 201 `{created, skipped}`: existing codes, "
            "unknown and closed batches are skipped and reported, the rest inserted in one "
            "statement."
        ),
        status_code=HTTP_201_CREATED,
        responses={**NOT_FOUND, **CONFLICT, **RULE, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def add_products(
        self,
        request: Request[Any, Any, Any],
        # No `db` dependency: one code is one statement on a pooled connection, and a
        # Session per request would cost more CPU than the statement itself.
        # The body is decoded by msgspec (app.api_support.TypedJsonBody): the Meta applies.
        data: Annotated[
            ProductInput
            | Annotated[
                list[ProductInput], msgspec.Meta(min_length=1, max_length=MAX_BULK_PRODUCTS)
            ],
            Body(description=f"A product or an array of 1..{MAX_BULK_PRODUCTS}"),
        ],
    ) -> Response[ProductOut | BulkProductsResult]:
        # Under an Idempotency-Key the middleware owns the transaction (and has begun it).
        owned = request_session(request.scope)
        result: ProductOut | BulkProductsResult
        if isinstance(data, list):
            items = [service.resolve_product(item, ["body", i]) for i, item in enumerate(data)]
            if owned is not None:
                result = await service.add_products_bulk(owned, items)
            else:
                async with transaction() as session:
                    result = await service.add_products_bulk(session, items)
        else:
            item = service.resolve_product(data, ["body"])
            if owned is not None:
                result = await service.add_product(await driver_connection(owned), item)
            else:
                async with statement_connection() as connection:
                    result = await service.add_product(connection, item)
        return Response(result, status_code=HTTP_201_CREATED)

    @get("/", summary="List products", responses=INVALID)
    async def list_products(
        self,
        db: Db,
        batch_id: Annotated[int | None, Parameter(ge=1, le=2**31 - 1)] = None,
        is_aggregated: FromQuery[bool | None] = None,
        unique_code: TextFilter = None,
        offset: Offset = 0,
        limit: Limit = 20,
    ) -> Page[ProductOut]:
        items, total = await service.list_products(
            db,
            batch_id=batch_id,
            is_aggregated=is_aggregated,
            unique_code=unique_code,
            offset=offset,
            limit=limit,
        )
        return Page(items=items, total=total, offset=offset, limit=limit)

    @get(
        "/by-batch/{batch_id:str}",
        summary="List one batch's products (alternative path)",
        description=(
            "The path some clients of the specification use for GET /products?batch_id=: the "
            "same list, with `has_more`. 404 when the batch does not exist."
        ),
        responses={**NOT_FOUND, **INVALID},
    )
    async def list_batch_products(
        self,
        db: Db,
        batch_id: PositiveId,
        is_aggregated: FromQuery[bool | None] = None,
        offset: Offset = 0,
        limit: Limit = 20,
    ) -> BatchProductPage:
        await service.require_batch(db, batch_id)
        items, total = await service.list_products(
            db,
            batch_id=batch_id,
            is_aggregated=is_aggregated,
            unique_code=None,
            offset=offset,
            limit=limit,
        )
        return BatchProductPage(
            items=items,
            total=total,
            offset=offset,
            limit=limit,
            has_more=offset + len(items) < total,
        )
