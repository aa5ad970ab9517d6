"""Report requests, the data a report shows, and the stored-file result tasks return."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from app.batches.schemas import BatchListItem
from app.notifications.schemas import Email

ReportFormat = Literal["excel", "pdf"]
# One product line of a report: unique code, aggregated?, aggregated at.
ProductRow = tuple[str, bool, dt.datetime | None]


class ReportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: ReportFormat
    email: Email | UnsetType = UNSET


class FileResult(msgspec.Struct):
    """The result of a task that stored a file: a presigned link valid until `expires_at`."""

    file_url: str
    file_name: str
    size: int
    expires_at: dt.datetime


@dataclass(frozen=True)
class ReportData:
    batch: BatchListItem
    # (hour in TZ, products aggregated in that hour), hours without aggregation included.
    timeline: list[tuple[dt.datetime, int]]
    generated_at: dt.datetime
    time_zone: str

    @property
    def total(self) -> int:
        return self.batch.product_count

    @property
    def aggregated(self) -> int:
        return self.batch.aggregated_count

    @property
    def remaining(self) -> int:
        return self.total - self.aggregated

    @property
    def rate(self) -> float:
        """Aggregation rate in percent, one decimal (0-100)."""
        return round(100.0 * self.aggregated / self.total, 1) if self.total else 0.0

    def info(self) -> list[tuple[str, object]]:
        """The batch facts both report formats print, in order (values keep their types)."""
        b = self.batch
        return [
            ("Batch id", b.id),
            ("Batch number", b.batch_number),
            ("Batch date", b.batch_date),
            ("Status", "Closed" if b.is_closed else "Open"),
            ("Closed at", b.closed_at),
            ("Task description", b.task_description),
            ("Work center", b.work_center.name),
            ("Work center identifier", b.work_center.identifier),
            ("Shift", b.shift),
            ("Team", b.team),
            ("Nomenclature", b.nomenclature),
            ("EKN code", b.ekn_code),
            ("Shift start", b.shift_start),
            ("Shift end", b.shift_end),
            ("Products", self.total),
            ("Aggregated", self.aggregated),
            ("Remaining", self.remaining),
            ("Aggregation rate, %", self.rate),
            ("Created at", b.created_at),
            ("Updated at", b.updated_at),
            ("Report generated at", self.generated_at),
            ("Time zone", self.time_zone),
        ]
