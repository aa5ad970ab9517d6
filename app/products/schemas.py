"""Product schemas; input takes English keys or the 1C Russian keys."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from app.schemas import MAX_INT32, Int32, NonEmptyText, exactly_one_of

UniqueCode = NonEmptyText

PRODUCT_KEYS: dict[str, tuple[str, ...]] = {
    "unique_code": ("unique_code", "УникальныйКодПродукта"),
    "batch_id": ("batch_id",),
    "batch_number": ("batch_number", "НомерПартии"),
    "batch_date": ("batch_date", "ДатаПартии"),
}
_BY_NUMBER_AND_DATE = PRODUCT_KEYS["batch_number"] + PRODUCT_KEYS["batch_date"]
# The rules resolve_product enforces, for the OpenAPI document (app.openapi): one key per
# field, and the batch named by `batch_id` alone or by its number and date.
_RULES = {
    "description": (
        "A product code and its batch: `batch_id`, or `batch_number` + `batch_date`. Each "
        "field under its English or 1C (Russian) key, exactly one of them."
    ),
    "allOf": [
        exactly_one_of(PRODUCT_KEYS["unique_code"]),
        {
            "oneOf": [
                {
                    "required": ["batch_id"],
                    "not": {"anyOf": [{"required": [key]} for key in _BY_NUMBER_AND_DATE]},
                },
                {
                    "allOf": [
                        exactly_one_of(PRODUCT_KEYS["batch_number"]),
                        exactly_one_of(PRODUCT_KEYS["batch_date"]),
                    ],
                    "not": {"required": ["batch_id"]},
                },
            ]
        },
    ],
}


# gc=False: a bulk request decodes 100,000 of these; they hold no cycles, so the cyclic
# garbage collector need not track (and repeatedly scan) them.
class ProductInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """A product code and its batch: `batch_id`, or `batch_number` + `batch_date`."""

    __json_schema_extra__: ClassVar[dict[str, Any]] = _RULES

    unique_code: UniqueCode | UnsetType = UNSET
    УникальныйКодПродукта: UniqueCode | UnsetType = UNSET
    batch_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT32)] | UnsetType = UNSET
    batch_number: Int32 | UnsetType = UNSET
    НомерПартии: Int32 | UnsetType = UNSET
    batch_date: dt.date | UnsetType = UNSET
    ДатаПартии: dt.date | UnsetType = UNSET


MAX_BULK_PRODUCTS = 100_000


class ProductOut(msgspec.Struct):
    id: int
    unique_code: str
    batch_id: int
    is_aggregated: bool
    aggregated_at: dt.datetime | None
    created_at: dt.datetime


class SkippedProduct(msgspec.Struct, gc=False):
    unique_code: str
    reason: str


class BulkProductsResult(msgspec.Struct):
    created: int
    skipped: list[SkippedProduct]


class BatchProductPage(msgspec.Struct):
    """GET /products/by-batch/{batch_id}: a page of one batch's products."""

    items: list[ProductOut]
    total: int
    offset: int
    limit: int
    has_more: bool
