"""Import and export requests and results."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from app.batches.schemas import BatchFilters
from app.errors import NO_NUL
from app.reports.schemas import FileResult
from app.schemas import Int32

# Documented; refused once per body by app.errors.decode_body.
_NO_NUL = {"pattern": NO_NUL}

ImportFormat = Literal["xlsx", "csv"]
ExportFormat = Literal["excel", "csv"]


class ExportFilters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The filters of GET /api/v1/batches, validated the same way."""

    is_closed: bool | None = None
    batch_number: Int32 | None = None
    batch_date: dt.date | None = None
    batch_date_from: dt.date | None = None
    batch_date_to: dt.date | None = None
    work_center_id: Int32 | None = None
    # Filters match exactly, a blank one too (as GET /batches does).
    shift: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=255, extra_json_schema=_NO_NUL)] | None
    ) = None
    nomenclature: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=10_000, extra_json_schema=_NO_NUL)]
        | None
    ) = None

    def to_batch_filters(self) -> BatchFilters:
        return BatchFilters(**msgspec.structs.asdict(self))


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: ExportFormat
    filters: ExportFilters = msgspec.field(default_factory=ExportFilters)


class ExportResult(FileResult):
    rows: int


class RowError(msgspec.Struct):
    row: int
    error: str


class ImportSummary(msgspec.Struct):
    total: int
    created: int
    updated: int
    skipped: int
    errors: list[RowError]


class ImportCheckpoint(msgspec.Struct):
    """What an import has committed so far; a retried task resumes after `processed` rows."""

    processed: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = msgspec.field(default_factory=list)
    completed: bool = False
