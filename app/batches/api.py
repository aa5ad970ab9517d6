"""HTTP for batches (shift tasks): thin, parse -> service -> serialize."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app.api_support import CONFLICT, INVALID, NOT_FOUND, Db
from app.batches import service
from app.batches.schemas import (
    BatchFilters,
    BatchInput,
    BatchListItem,
    BatchOut,
    BatchUpdate,
    resolve_batch,
    resolve_feed,
)
from app.cache import BATCH_TTL, LIST_TTL, batch_page_tags, batch_tags, read_cache
from app.idempotency import IdempotentOperation
from app.schemas import Limit, Offset, Page, PositiveId, TextFilter

MAX_FEED_BATCHES = 1000


class BatchController(Controller):
    path = "/api/v1/batches"
    tags = ["batches"]

    @post(
        "/",
        summary="Ingest shift tasks from 1C",
        description=(
            "A JSON array of 1..1000 shift tasks with English or 1C Russian keys. A duplicate "
            "(batch_number, batch_date), in the database or twice in the array, is a 409 and "
            "nothing is written, unless `on_conflict=update` (the 1C re-send rule: overwrite)."
        ),
        responses={
            # The 1C re-send: every batch of the array existed and was overwritten.
            200: ResponseSpec(
                data_container=list[BatchOut],
                description="`on_conflict=update` and no batch was new: all were overwritten",
                generate_examples=False,
            ),
            **CONFLICT,
            **INVALID,
        },
        operation_class=IdempotentOperation,
        status_code=HTTP_201_CREATED,
    )
    async def create_batches(
        self,
        db: Db,
        # The body is decoded by msgspec (app.api_support.TypedJsonBody): the Meta applies.
        data: Annotated[
            Annotated[list[BatchInput], msgspec.Meta(min_length=1, max_length=MAX_FEED_BATCHES)],
            Body(description="Shift tasks as 1C sends them"),
        ],
        on_conflict: Annotated[
            Literal["error", "update"],
            Parameter(description="`update` overwrites existing batches"),
        ] = "error",
    ) -> Response[list[BatchOut]]:
        batches, created = await service.create_batches(
            db, resolve_feed(data, ["body"]), overwrite=on_conflict == "update"
        )
        return Response(batches, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("/", summary="List batches", responses=INVALID)
    async def list_batches(
        self,
        db: Db,
        is_closed: FromQuery[bool | None] = None,
        batch_number: Annotated[int | None, Parameter(ge=1, le=2**31 - 1)] = None,
        batch_date: FromQuery[dt.date | None] = None,
        batch_date_from: FromQuery[dt.date | None] = None,
        batch_date_to: FromQuery[dt.date | None] = None,
        work_center_id: Annotated[int | None, Parameter(ge=1, le=2**31 - 1)] = None,
        shift: TextFilter = None,
        nomenclature: TextFilter = None,
        offset: Offset = 0,
        limit: Limit = 20,
    ) -> Page[BatchListItem]:
        filters = BatchFilters(
            is_closed=is_closed,
            batch_number=batch_number,
            batch_date=batch_date,
            batch_date_from=batch_date_from,
            batch_date_to=batch_date_to,
            work_center_id=work_center_id,
            shift=shift,
            nomenclature=nomenclature,
        )

        async def page() -> Page[BatchListItem]:
            items, total = await service.list_batches(db, filters, offset, limit)
            return Page(items=items, total=total, offset=offset, limit=limit)

        return await read_cache.get_or_compute(
            ("batches", *msgspec.structs.astuple(filters), offset, limit),
            page,
            ttl=LIST_TTL,
            tags=lambda result: batch_page_tags(result.items),
            weight=lambda result: len(result.items),
        )

    @get(
        "/{batch_id:str}",
        summary="Get a batch with its products",
        responses={**NOT_FOUND, **INVALID},
    )
    async def get_batch(self, db: Db, batch_id: PositiveId) -> BatchOut:
        return await read_cache.get_or_compute(
            ("batch", batch_id),
            lambda: service.get_batch(db, batch_id),
            ttl=BATCH_TTL,
            tags=batch_tags,
            weight=lambda batch: len(batch.products),
        )

    @patch(
        "/{batch_id:str}",
        summary="Update a batch",
        description="Any field; `is_closed: true` sets closed_at, `false` clears it.",
        responses={**NOT_FOUND, **CONFLICT, **INVALID},
    )
    async def update_batch(
        self, db: Db, batch_id: PositiveId, data: JSONBody[BatchUpdate]
    ) -> BatchOut:
        return await service.update_batch(db, batch_id, resolve_batch(data, ["body"], partial=True))

    @post(
        "/{batch_id:str}/close",
        summary="Close a batch",
        status_code=HTTP_200_OK,
        responses={**CONFLICT, **NOT_FOUND, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def close_batch(self, db: Db, batch_id: PositiveId) -> BatchOut:
        return await service.close_batch(db, batch_id)
