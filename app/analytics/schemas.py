"""Analytics schemas: the dashboard, one batch's statistics, a side-by-side comparison.

Rates are percentages 0-100 with one decimal.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from app.batches.schemas import WorkCenterRef
from app.schemas import Int32

MIN_COMPARED = 2
MAX_COMPARED = 50


class Figures(msgspec.Struct, kw_only=True):
    total_batches: int
    active_batches: int
    closed_batches: int
    total_products: int
    aggregated_products: int
    aggregation_rate: float


class ShiftFigures(Figures, kw_only=True):
    shift: str


class WorkCenterFigures(Figures, kw_only=True):
    id: int
    identifier: str
    name: str


class ClosingBatch(msgspec.Struct, kw_only=True):
    """An open batch whose shift ends today."""

    id: int
    batch_number: int
    batch_date: dt.date
    shift: str
    work_center: WorkCenterRef
    shift_end: dt.datetime
    total_products: int
    aggregated_products: int
    aggregation_rate: float


class TodayFigures(Figures, kw_only=True):
    """Batches dated today, plus what happened today across all batches."""

    date: dt.date
    aggregated_today: int  # products aggregated today, in any batch
    closed_today: int  # batches closed today
    closing_today: list[ClosingBatch]


class Dashboard(msgspec.Struct, kw_only=True):
    summary: Figures
    today: TodayFigures
    by_shift: list[ShiftFigures]
    top_work_centers: list[WorkCenterFigures]
    generated_at: dt.datetime  # when these figures were computed (the snapshot time)


class BatchInfo(msgspec.Struct, kw_only=True):
    id: int
    batch_number: int
    batch_date: dt.date
    is_closed: bool
    closed_at: dt.datetime | None
    work_center: WorkCenterRef
    shift: str
    team: str
    nomenclature: str
    ekn_code: str
    shift_start: dt.datetime
    shift_end: dt.datetime
    # From shift start to closing; null while the batch is open.
    time_to_close_seconds: float | None


class ProductionStats(msgspec.Struct, kw_only=True):
    total_products: int
    aggregated: int
    remaining: int
    aggregation_rate: float


class TimelinePoint(msgspec.Struct, kw_only=True):
    hour: dt.datetime  # start of the hour (in the configured time zone)
    aggregated: int  # products aggregated during that hour
    cumulative: int
    cumulative_rate: float  # share of the batch's products aggregated by the end of the hour


class BatchStatistics(msgspec.Struct, kw_only=True):
    batch_info: BatchInfo
    production_stats: ProductionStats
    timeline: list[TimelinePoint]


class CompareRequest(msgspec.Struct, forbid_unknown_fields=True):
    batch_ids: Annotated[
        list[Int32],
        msgspec.Meta(
            min_length=MIN_COMPARED,
            max_length=MAX_COMPARED,
            extra_json_schema={"uniqueItems": True},  # a repeat is a 422 (the service says where)
        ),
    ]


class BatchComparison(msgspec.Struct, kw_only=True):
    batch_id: int
    batch_number: int
    batch_date: dt.date
    work_center: WorkCenterRef
    shift: str
    team: str
    is_closed: bool
    total_products: int
    aggregated: int
    remaining: int
    aggregation_rate: float
    time_to_close_seconds: float | None


class ComparisonAverage(msgspec.Struct, kw_only=True):
    """Means over the compared batches (time to close over the closed ones only)."""

    total_products: float
    aggregated: float
    remaining: float
    aggregation_rate: float
    time_to_close_seconds: float | None


class Comparison(msgspec.Struct, kw_only=True):
    comparison: list[BatchComparison]
    average: ComparisonAverage
