"""Schema pieces shared by several features: pagination, 1C key handling, datetimes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from litestar.params import Parameter

from app.config import get_settings
from app.errors import NO_NUL, InputInvalid, Loc

T = TypeVar("T")

MAX_INT32 = 2**31 - 1
PositiveId = Annotated[int, Parameter(gt=0, le=MAX_INT32, description="Positive 32-bit id")]
Offset = Annotated[int, Parameter(ge=0, le=MAX_INT32, description="Rows to skip")]
Limit = Annotated[int, Parameter(ge=1, le=1000, description="Page size (1..1000)")]

# PostgreSQL text cannot hold NUL characters: refuse them at the edge (a 422, not a 500).
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000, pattern=NO_NUL)]
TextFilter = Annotated[str | None, Parameter(pattern=NO_NUL, description="Exact match")]
Int32 = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT32)]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


def aware(value: dt.datetime) -> dt.datetime:
    """Naive datetimes from 1C are wall-clock times in the configured zone (TZ, default UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=ZoneInfo(get_settings().tz))
    return value


def pick(
    item: msgspec.Struct,
    names: tuple[str, ...],
    loc: Loc,
) -> tuple[Any, str | None]:
    """The value of the first set synonym among `names` and the key the client used.

    Two synonyms set at once (e.g. `shift` and `Смена`) are ambiguous -> 422.
    """
    found: str | None = None
    value: Any = msgspec.UNSET
    for name in names:  # a plain loop: this runs for every field of every item of a feed
        candidate = getattr(item, name)
        if candidate is msgspec.UNSET:
            continue
        if found is not None:
            raise InputInvalid.at(
                [*loc, name], f"'{found}' and '{name}' name the same field; send one"
            )
        found, value = name, candidate
    if found is None:
        return msgspec.UNSET, None
    if isinstance(value, str) and not value.strip():
        raise InputInvalid.at([*loc, found], "must not be blank", "string_blank")
    return value, found
