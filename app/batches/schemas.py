"""Batch (shift task) schemas. Input takes English snake_case or the 1C Russian keys."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from app.errors import InputInvalid, Loc
from app.schemas import (
    MAX_YEAR,
    MIN_YEAR,
    Instant,
    Int32,
    LongText,
    NonEmptyText,
    at_most_one_of,
    aware,
    exactly_one_of,
    pick,
)

# field -> the keys a client may send it under, English first.
BATCH_KEYS: dict[str, tuple[str, ...]] = {
    "is_closed": ("is_closed", "СтатусЗакрытия"),
    "task_description": ("task_description", "ПредставлениеЗаданияНаСмену"),
    "work_center_name": ("work_center", "work_center_name", "РабочийЦентр"),
    "work_center_identifier": ("work_center_identifier", "ИдентификаторРЦ"),
    "shift": ("shift", "Смена"),
    "team": ("team", "Бригада"),
    "batch_number": ("batch_number", "НомерПартии"),
    "batch_date": ("batch_date", "ДатаПартии"),
    "nomenclature": ("nomenclature", "Номенклатура"),
    "ekn_code": ("ekn_code", "КодЕКН"),
    "shift_start": ("shift_start", "ДатаВремяНачалаСмены"),
    "shift_end": ("shift_end", "ДатаВремяОкончанияСмены"),
}
OPTIONAL_ON_CREATE = {"is_closed"}


_SHIFT_ORDER = (
    "shift_end (ДатаВремяОкончанияСмены) must not be before shift_start "
    "(ДатаВремяНачалаСмены), compared as instants"
)
# The synonym rules and the shift order, for the OpenAPI document (app.openapi reads
# `__json_schema_extra__`); resolve_batch enforces them. JSON Schema cannot compare two
# fields: the order is stated in words and as `x-not-before` (field -> the field it must
# not precede, under either key).
_FEED_ITEM = {
    "description": (
        "One shift task as 1C sends it. Every field has an English and a 1C (Russian) key: "
        "send exactly one of them (is_closed may be left out); both at once is a 422. "
        f"{_SHIFT_ORDER}."
    ),
    "allOf": [
        at_most_one_of(keys) if field in OPTIONAL_ON_CREATE else exactly_one_of(keys)
        for field, keys in BATCH_KEYS.items()
    ],
    "x-not-before": {"shift_end": "shift_start"},
}
_CHANGES = {
    "description": (
        "Fields to change, under their English or 1C (Russian) key, at most one key per "
        f"field. {_SHIFT_ORDER}, the stored value standing in for one not sent."
    ),
    "allOf": [at_most_one_of(keys) for keys in BATCH_KEYS.values()],
    "x-not-before": {"shift_end": "shift_start"},
}


class BatchInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One shift task as 1C sends it. Each field has an English and a 1C (Russian) key."""

    __json_schema_extra__: ClassVar[dict[str, Any]] = _FEED_ITEM

    is_closed: bool | UnsetType = UNSET
    СтатусЗакрытия: bool | UnsetType = UNSET
    task_description: LongText | UnsetType = UNSET
    ПредставлениеЗаданияНаСмену: LongText | UnsetType = UNSET
    work_center: NonEmptyText | UnsetType = UNSET
    work_center_name: NonEmptyText | UnsetType = UNSET
    РабочийЦентр: NonEmptyText | UnsetType = UNSET
    work_center_identifier: NonEmptyText | UnsetType = UNSET
    ИдентификаторРЦ: NonEmptyText | UnsetType = UNSET
    shift: NonEmptyText | UnsetType = UNSET
    Смена: NonEmptyText | UnsetType = UNSET
    team: NonEmptyText | UnsetType = UNSET
    Бригада: NonEmptyText | UnsetType = UNSET
    batch_number: Int32 | UnsetType = UNSET
    НомерПартии: Int32 | UnsetType = UNSET
    batch_date: dt.date | UnsetType = UNSET
    ДатаПартии: dt.date | UnsetType = UNSET
    nomenclature: LongText | UnsetType = UNSET
    Номенклатура: LongText | UnsetType = UNSET
    ekn_code: NonEmptyText | UnsetType = UNSET
    КодЕКН: NonEmptyText | UnsetType = UNSET
    shift_start: Instant | UnsetType = UNSET
    ДатаВремяНачалаСмены: Instant | UnsetType = UNSET
    shift_end: Instant | UnsetType = UNSET
    ДатаВремяОкончанияСмены: Instant | UnsetType = UNSET


class BatchUpdate(BatchInput, forbid_unknown_fields=True, kw_only=True):
    """PATCH /batches/{id}: the fields of BatchInput, any of them."""

    __json_schema_extra__: ClassVar[dict[str, Any]] = _CHANGES


class BatchFields(msgspec.Struct, kw_only=True):
    """A resolved batch input: English names, aware datetimes, the keys the client used."""

    values: dict[str, Any]
    keys: dict[str, str]
    loc: Loc


def resolve_batch(item: BatchInput, loc: Loc, *, partial: bool) -> BatchFields:
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for field, names in BATCH_KEYS.items():
        value, key = pick(item, names, loc)
        if key is None:
            if not partial and field not in OPTIONAL_ON_CREATE:
                raise InputInvalid.at(
                    [*loc, names[-1] if _prefers_russian(item) else names[0]],
                    f"required field is missing (send '{names[0]}' or '{names[-1]}')",
                    "missing",
                )
            continue
        if isinstance(value, dt.datetime):
            if not MIN_YEAR <= value.year <= MAX_YEAR:  # else UTC could fall outside 1..9999
                raise InputInvalid.at(
                    [*loc, key],
                    f"datetime out of range (years {MIN_YEAR:04}..{MAX_YEAR})",
                    "datetime_range",
                )
            value = aware(value)
        if isinstance(value, str):
            value = value.strip()
        values[field] = value
        keys[field] = key
    if not partial:
        values.setdefault("is_closed", False)
    start, end = values.get("shift_start"), values.get("shift_end")
    if start is not None and end is not None and end < start:
        raise InputInvalid.at(
            [*loc, keys["shift_end"]], "shift end must not be before shift start", "shift_order"
        )
    return BatchFields(values=values, keys=keys, loc=loc)


def _prefers_russian(item: BatchInput) -> bool:
    """Name a missing field in the language the client writes in."""
    return any(
        getattr(item, names[-1]) is not UNSET for names in BATCH_KEYS.values() if len(names) > 1
    )


class WorkCenterRef(msgspec.Struct):
    id: int
    identifier: str
    name: str


class ProductBrief(msgspec.Struct):
    id: int
    unique_code: str
    is_aggregated: bool
    aggregated_at: dt.datetime | None


class BatchBase(msgspec.Struct, kw_only=True):
    """The fields every batch response carries."""

    id: int
    is_closed: bool
    closed_at: dt.datetime | None
    task_description: str
    work_center: WorkCenterRef
    shift: str
    team: str
    batch_number: int
    batch_date: dt.date
    nomenclature: str
    ekn_code: str
    shift_start: dt.datetime
    shift_end: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


class BatchOut(BatchBase, kw_only=True):
    """A single batch: always with its products (`[]` when it has none)."""

    products: list[ProductBrief]


class BatchListItem(BatchBase, kw_only=True):
    """A batch in a list: product counts instead of the product array."""

    product_count: int
    aggregated_count: int


class BatchFilters(msgspec.Struct, kw_only=True):
    is_closed: bool | None = None
    batch_number: int | None = None
    batch_date: dt.date | None = None
    batch_date_from: dt.date | None = None
    batch_date_to: dt.date | None = None
    work_center_id: int | None = None
    shift: str | None = None
    nomenclature: str | None = None


OnConflict = Annotated[str, msgspec.Meta(pattern="^(error|update)$")]
