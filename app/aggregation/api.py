"""HTTP for aggregation: synchronous (one code or up to 100) and asynchronous (any size)."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app.aggregation import service
from app.aggregation.schemas import (
    AggregateAsyncRequest,
    AggregateListRequest,
    AggregateRequest,
    AggregationOutcome,
    AggregationSummary,
)
from app.api_support import CONFLICT, INVALID, NOT_FOUND, RULE, Db
from app.errors import InputInvalid
from app.idempotency import IdempotentOperation
from app.outbox import enqueue_task
from app.products.schemas import ProductOut
from app.schemas import PositiveId
from app.tasks.schemas import TaskAccepted


def _codes(codes: list[str], key: str) -> list[str]:
    stripped = [code.strip() for code in codes]
    for index, code in enumerate(stripped):
        if not code:
            raise InputInvalid.at(["body", key, index], "must not be blank", "string_blank")
    return stripped


class AggregationController(Controller):
    path = "/api/v1/batches/{batch_id:str}"
    tags = ["aggregation"]

    @post(
        "/aggregate",
        summary="Aggregate codes into a batch now",
        description=(
            "`{unique_code}` -> the aggregated product; `{unique_codes: [...]}` (1..100) -> a "
            "summary `{batch_id, total, aggregated, failed, errors}`."
        ),
        status_code=HTTP_200_OK,
        responses={**CONFLICT, **RULE, **NOT_FOUND, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def aggregate(
        self, db: Db, batch_id: PositiveId, data: JSONBody[AggregateRequest]
    ) -> ProductOut | AggregationSummary:
        has_one = data.unique_code is not msgspec.UNSET
        has_many = data.unique_codes is not msgspec.UNSET
        if has_one == has_many:
            raise InputInvalid.at(
                ["body", "unique_code"], "send exactly one of unique_code or unique_codes"
            )
        if has_many:
            assert isinstance(data.unique_codes, list)
            return await service.aggregate_list(
                db, batch_id, _codes(data.unique_codes, "unique_codes")
            )
        assert isinstance(data.unique_code, str)
        code = data.unique_code.strip()
        if not code:
            raise InputInvalid.at(["body", "unique_code"], "must not be blank", "string_blank")
        return await service.aggregate_one(db, batch_id, code)

    @post(
        "/aggregate-async",
        summary="Aggregate any number of codes in the background",
        description="202 with a task id; poll GET /api/v1/tasks/{task_id}. Same rules, in chunks.",
        status_code=HTTP_202_ACCEPTED,
        responses={**CONFLICT, **RULE, **NOT_FOUND, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def aggregate_async(
        self, db: Db, batch_id: PositiveId, data: JSONBody[AggregateAsyncRequest]
    ) -> Response[TaskAccepted]:
        codes = _codes(data.unique_codes, "unique_codes")
        await service.lock_open_batch(db, batch_id)
        task = await enqueue_task(
            db,
            "aggregate_products",
            {"batch_id": batch_id, "unique_codes": codes},
            total=len(codes),
        )
        return Response(TaskAccepted(task_id=str(task.id)), status_code=HTTP_202_ACCEPTED)


@post(
    "/api/v1/products/batches/{batch_id:str}/aggregate",
    summary="Aggregate codes into a batch now (alternative path)",
    description=(
        "The path some clients of the specification use for POST "
        "/api/v1/batches/{batch_id}/aggregate with `{unique_codes: [...]}` (1..100): the same "
        "service and rules, answered as the summary plus `success` (`failed == 0`)."
    ),
    tags=["aggregation"],
    status_code=HTTP_200_OK,
    responses={**RULE, **NOT_FOUND, **INVALID},
)
async def aggregate_via_products(
    db: Db, batch_id: PositiveId, data: JSONBody[AggregateListRequest]
) -> AggregationOutcome:
    summary = await service.aggregate_list(db, batch_id, _codes(data.unique_codes, "unique_codes"))
    return AggregationOutcome(**msgspec.structs.asdict(summary), success=summary.failed == 0)
