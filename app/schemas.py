"""Schema pieces shared by several features: pagination, 1C key handling, datetimes."""

from __future__ import annotations

import datetime as dt
import itertools
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
# Blank values are refused by the code that strips them ("must not be blank"); the document
# states both rules as one pattern (app.openapi puts DOCUMENTED_TEXT where it finds this mark).
NOT_BLANK_MARK = "x-not-blank"
NOT_BLANK = {NOT_BLANK_MARK: True}
# No `pattern` for msgspec to check: a regex per string cost 24 ms for 100,000 codes, and
# app.errors.decode_body refuses NUL once per body instead (the same 422 at the same path).
NonEmptyText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, extra_json_schema=NOT_BLANK)
]
LongText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=10_000, extra_json_schema=NOT_BLANK)
]
TextFilter = Annotated[str | None, Parameter(pattern=NO_NUL, description="Exact match")]
Int32 = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT32)]

# Years 0002..9998: whatever the offset, the instant stays inside the years 1..9999 that it
# is stored and answered in (UTC). Checked in code (resolve_batch), stated in the document.
MIN_YEAR, MAX_YEAR = 2, 9998
YEARS_0002_9998 = (
    r"^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
)
Instant = Annotated[
    dt.datetime,
    msgspec.Meta(
        extra_json_schema={
            "format": "date-time",
            "pattern": YEARS_0002_9998,
            "description": (
                "RFC 3339 date-time, years 0002..9998. The offset may also be left out (1C "
                "sends local time): such a time is read in the service's time zone (TZ)."
            ),
        }
    ),
]


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


def exactly_one_of(keys: tuple[str, ...]) -> dict[str, Any]:
    """JSON Schema for the document: exactly one of these synonym keys is present."""
    return {"oneOf": [{"required": [key]} for key in keys]}


def at_most_one_of(keys: tuple[str, ...]) -> dict[str, Any]:
    """JSON Schema for the document: no two of these synonym keys together (see `pick`)."""
    both = [{"required": list(pair)} for pair in itertools.combinations(keys, 2)]
    return {"not": both[0] if len(both) == 1 else {"anyOf": both}}


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
