"""Aggregation requests and the summary shared by the sync list form and the async task."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from app.products.schemas import UniqueCode

MAX_SYNC_CODES = 100
MAX_ASYNC_CODES = 1_000_000


class AggregateRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Either one `unique_code` (-> the product) or `unique_codes` (1..100 -> a summary)."""

    # Exactly one of the two keys (with additionalProperties false), for app.openapi.
    __json_schema_extra__: ClassVar[dict[str, Any]] = {"minProperties": 1, "maxProperties": 1}

    unique_code: UniqueCode | msgspec.UnsetType = msgspec.UNSET
    unique_codes: (
        Annotated[list[UniqueCode], msgspec.Meta(min_length=1, max_length=MAX_SYNC_CODES)]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class AggregateListRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of the alternative path POST /products/batches/{batch_id}/aggregate."""

    unique_codes: Annotated[list[UniqueCode], msgspec.Meta(min_length=1, max_length=MAX_SYNC_CODES)]


class AggregateAsyncRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    unique_codes: Annotated[
        list[UniqueCode], msgspec.Meta(min_length=1, max_length=MAX_ASYNC_CODES)
    ]


class AggregationError(msgspec.Struct):
    unique_code: str
    error: str


class AggregationSummary(msgspec.Struct):
    batch_id: int
    total: int
    aggregated: int
    failed: int
    errors: list[AggregationError]


class AggregationOutcome(AggregationSummary):
    """The summary as the alternative path answers it: `success` is `failed == 0`."""

    success: bool
