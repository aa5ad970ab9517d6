"""Analytics rules: dashboard figures (precomputed snapshot), batch statistics, comparison.

Every figure comes from SQL aggregates; Python only shapes rows. The dashboard's heavy part
(every product grouped by batch, shift and work center) is computed by refresh_statistics
every 5 minutes into `statistics_snapshots`, and read from there; when the snapshot is
missing, older than SNAPSHOT_MAX_AGE (scheduler down), from another day, or older than a
change to the data it summarises, the first request recomputes it, under an advisory lock
so concurrent requests wait for that one. A dashboard is never older than the last write.
The refresh (its own transaction) and the endpoint's read-through are app/analytics/jobs.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager

from app.analytics.schemas import (
    BatchComparison,
    BatchInfo,
    BatchStatistics,
    ClosingBatch,
    Comparison,
    ComparisonAverage,
    Dashboard,
    Figures,
    ProductionStats,
    ShiftFigures,
    TimelinePoint,
    TodayFigures,
    WorkCenterFigures,
)
from app.batches.schemas import WorkCenterRef
from app.cache import DASHBOARD_TTL, changed_since
from app.config import get_settings
from app.errors import FieldError, InputInvalid, NotFound
from app.models import Batch, Product, StatisticsSnapshot, WorkCenter

DASHBOARD_SNAPSHOT = "dashboard"
SNAPSHOT_MAX_AGE = dt.timedelta(minutes=10)  # two refresh periods: one missed refresh is fine
TOP_WORK_CENTERS = 10
MAX_CLOSING_TODAY = 100
DASHBOARD_LOCK_KEY = 0x50434453  # pg advisory lock serialising dashboard recomputation


def rate(part: float, whole: float) -> float:
    """`part` as a percentage of `whole`, one decimal; 0.0 when there is nothing."""
    return round(part * 100.0 / whole, 1) if whole else 0.0


def _figures(row: Any) -> dict[str, Any]:
    return {
        "total_batches": row.total_batches,
        "active_batches": row.active_batches,
        "closed_batches": row.closed_batches,
        "total_products": row.total_products,
        "aggregated_products": row.aggregated_products,
        "aggregation_rate": rate(row.aggregated_products, row.total_products),
    }


# One pass over products grouped by batch, then grouping sets give the totals, each shift
# and each work center from the same rows (so the three always agree).
GROUPED_FIGURES = text(
    """
    WITH per_batch AS (
        SELECT b.shift, b.work_center_id, b.is_closed,
               coalesce(p.products, 0) AS products, coalesce(p.aggregated, 0) AS aggregated
        FROM batches b
        LEFT JOIN (
            SELECT batch_id, count(*) AS products,
                   count(*) FILTER (WHERE is_aggregated) AS aggregated
            FROM products GROUP BY batch_id
        ) p ON p.batch_id = b.id
    ), grouped AS (
        SELECT GROUPING(shift, work_center_id) AS level, shift, work_center_id,
               count(*) AS total_batches,
               count(*) FILTER (WHERE NOT is_closed) AS active_batches,
               count(*) FILTER (WHERE is_closed) AS closed_batches,
               coalesce(sum(products), 0)::bigint AS total_products,
               coalesce(sum(aggregated), 0)::bigint AS aggregated_products,
               row_number() OVER (
                   PARTITION BY GROUPING(shift, work_center_id)
                   ORDER BY sum(aggregated) DESC, sum(products) DESC, work_center_id
               ) AS rank
        FROM per_batch
        GROUP BY GROUPING SETS ((), (shift), (work_center_id))
    )
    SELECT g.*, wc.identifier, wc.name
    FROM grouped g LEFT JOIN work_centers wc ON wc.id = g.work_center_id
    WHERE g.level <> :by_work_center OR g.rank <= :top
    ORDER BY g.level, g.shift, g.rank
    """
)
# GROUPING(shift, work_center_id) of each grouping set.
LEVEL_TOTAL, LEVEL_SHIFT, LEVEL_WORK_CENTER = 3, 1, 2

TODAY_FIGURES = text(
    """
    WITH today AS (
        SELECT b.is_closed, p.products, p.aggregated
        FROM batches b
        CROSS JOIN LATERAL (
            SELECT count(*) AS products, count(*) FILTER (WHERE is_aggregated) AS aggregated
            FROM products WHERE batch_id = b.id
        ) p
        WHERE b.batch_date = :today
    )
    SELECT count(*) AS total_batches,
           count(*) FILTER (WHERE NOT is_closed) AS active_batches,
           count(*) FILTER (WHERE is_closed) AS closed_batches,
           coalesce(sum(products), 0)::bigint AS total_products,
           coalesce(sum(aggregated), 0)::bigint AS aggregated_products,
           (SELECT count(*) FROM products
             WHERE aggregated_at >= :day_start AND aggregated_at < :day_end) AS aggregated_today,
           (SELECT count(*) FROM batches
             WHERE closed_at >= :day_start AND closed_at < :day_end) AS closed_today
    FROM today
    """
)

CLOSING_TODAY = text(
    """
    SELECT b.id, b.batch_number, b.batch_date, b.shift, b.shift_end,
           wc.id AS work_center_id, wc.identifier, wc.name, p.products, p.aggregated
    FROM batches b
    JOIN work_centers wc ON wc.id = b.work_center_id
    CROSS JOIN LATERAL (
        SELECT count(*) AS products, count(*) FILTER (WHERE is_aggregated) AS aggregated
        FROM products WHERE batch_id = b.id
    ) p
    WHERE NOT b.is_closed AND b.shift_end >= :day_start AND b.shift_end < :day_end
    ORDER BY b.shift_end, b.id
    LIMIT :limit
    """
)


def _local_day(now: dt.datetime) -> tuple[dt.date, dt.datetime, dt.datetime]:
    """Today in the configured zone, and its bounds as instants."""
    zone = ZoneInfo(get_settings().tz)
    today = now.astimezone(zone).date()
    start = dt.datetime.combine(today, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return today, start, end


async def compute_dashboard(session: AsyncSession, now: dt.datetime) -> Dashboard:
    today, day_start, day_end = _local_day(now)
    grouped = (
        await session.execute(
            GROUPED_FIGURES, {"by_work_center": LEVEL_WORK_CENTER, "top": TOP_WORK_CENTERS}
        )
    ).all()
    summary = next(Figures(**_figures(r)) for r in grouped if r.level == LEVEL_TOTAL)
    by_shift = [
        ShiftFigures(shift=r.shift, **_figures(r)) for r in grouped if r.level == LEVEL_SHIFT
    ]
    top_work_centers = [
        WorkCenterFigures(id=r.work_center_id, identifier=r.identifier, name=r.name, **_figures(r))
        for r in grouped
        if r.level == LEVEL_WORK_CENTER
    ]
    bounds = {"day_start": day_start, "day_end": day_end}
    day = (await session.execute(TODAY_FIGURES, {"today": today, **bounds})).one()
    closing = (await session.execute(CLOSING_TODAY, {**bounds, "limit": MAX_CLOSING_TODAY})).all()
    return Dashboard(
        summary=summary,
        today=TodayFigures(
            date=today,
            aggregated_today=day.aggregated_today,
            closed_today=day.closed_today,
            closing_today=[
                ClosingBatch(
                    id=r.id,
                    batch_number=r.batch_number,
                    batch_date=r.batch_date,
                    shift=r.shift,
                    work_center=WorkCenterRef(r.work_center_id, r.identifier, r.name),
                    shift_end=r.shift_end,
                    total_products=r.products,
                    aggregated_products=r.aggregated,
                    aggregation_rate=rate(r.aggregated, r.products),
                )
                for r in closing
            ],
            **_figures(day),
        ),
        by_shift=by_shift,
        top_work_centers=top_work_centers,
        generated_at=now,
    )


def is_fresh(dashboard: Dashboard, now: dt.datetime) -> bool:
    return now - dashboard.generated_at < SNAPSHOT_MAX_AGE and (
        dashboard.today.date == _local_day(now)[0]
    )


def snapshot_ttl(dashboard: Dashboard) -> float:
    """Cache a snapshot answer no longer than it stays fresh (age, and the day it covers)."""
    now = dt.datetime.now(dt.UTC)
    stale_at = min(dashboard.generated_at + SNAPSHOT_MAX_AGE, _local_day(now)[2])
    return max(0.0, min(DASHBOARD_TTL, (stale_at - now).total_seconds()))


async def read_snapshot(session: AsyncSession) -> tuple[Dashboard, str | None] | None:
    """The stored dashboard and the database snapshot it was computed from."""
    row = (
        await session.execute(
            select(StatisticsSnapshot.data, StatisticsSnapshot.source_snapshot).where(
                StatisticsSnapshot.name == DASHBOARD_SNAPSHOT
            )
        )
    ).one_or_none()
    return None if row is None else (msgspec.convert(row[0], Dashboard), row[1])


# The tables the dashboard summarises: a change to any of them outdates a snapshot.
DASHBOARD_SOURCES = ("batches", "products", "work_centers")


async def fresh_snapshot(session: AsyncSession, decided_at: dt.datetime) -> Dashboard | None:
    """The latest snapshot if nothing it summarises changed since; None when it needs a
    refresh (app/analytics/jobs.py refresh_dashboard, not_before=decided_at).

    "Changed since" is exact whoever computed the snapshot and whoever wrote: a change
    logged by a transaction its source snapshot does not show (app/cache.py).
    """
    stored = await read_snapshot(session)
    if stored is None:
        return None
    current, source = stored
    if not is_fresh(current, decided_at) or source is None:
        return None
    if await changed_since(session, DASHBOARD_SOURCES, source):
        return None
    return current


async def _batch_rows(session: AsyncSession, ids: Sequence[int]) -> dict[int, Any]:
    """Batch, work center and product counts of each batch in `ids` (absent ids missing)."""
    counts = (
        select(
            Product.batch_id,
            func.count().label("total"),
            func.count().filter(Product.is_aggregated).label("aggregated"),
        )
        .where(Product.batch_id.in_(ids))
        .group_by(Product.batch_id)
        .subquery()
    )
    rows = await session.execute(
        select(
            Batch,
            WorkCenter,
            func.coalesce(counts.c.total, 0).label("total"),
            func.coalesce(counts.c.aggregated, 0).label("aggregated"),
        )
        .join(WorkCenter, WorkCenter.id == Batch.work_center_id)
        .outerjoin(counts, counts.c.batch_id == Batch.id)
        .where(Batch.id.in_(ids))
        .options(contains_eager(Batch.work_center))  # batch.work_center, for msgspec.convert
    )
    return {row.Batch.id: row for row in rows.all()}


def _production(row: Any) -> dict[str, Any]:
    """Product counts of one `_batch_rows` row, as statistics and comparison show them."""
    return {
        "total_products": row.total,
        "aggregated": row.aggregated,
        "remaining": row.total - row.aggregated,
        "aggregation_rate": rate(row.aggregated, row.total),
    }


HOURLY_AGGREGATIONS = text(
    """
    SELECT date_trunc('hour', aggregated_at, :tz) AS hour, count(*) AS aggregated
    FROM products
    WHERE batch_id = :batch_id AND aggregated_at IS NOT NULL
    GROUP BY 1
    ORDER BY 1
    """
)


async def hourly_aggregations(
    session: AsyncSession, batch_id: int, time_zone: str
) -> list[tuple[dt.datetime, int]]:
    """Products aggregated in each hour of the `time_zone` clock (hour starts, aware), in order.

    The one timeline query: batch statistics and the batch reports both draw from it.
    """
    rows = await session.execute(HOURLY_AGGREGATIONS, {"tz": time_zone, "batch_id": batch_id})
    return [(hour, aggregated) for hour, aggregated in rows.all()]


async def batch_statistics(session: AsyncSession, batch_id: int) -> BatchStatistics:
    row = (await _batch_rows(session, [batch_id])).get(batch_id)
    if row is None:
        raise NotFound(f"Batch not found (id {batch_id})")
    hours = await hourly_aggregations(session, batch_id, get_settings().tz)
    running_totals = itertools.accumulate(aggregated for _, aggregated in hours)
    return BatchStatistics(
        batch_info=msgspec.convert(row.Batch, BatchInfo, from_attributes=True),
        production_stats=ProductionStats(**_production(row)),
        timeline=[
            TimelinePoint(
                hour=hour,
                aggregated=aggregated,
                cumulative=cumulative,
                cumulative_rate=rate(cumulative, row.total),
            )
            for (hour, aggregated), cumulative in zip(hours, running_totals, strict=True)
        ],
    )


def _check_distinct(ids: Sequence[int]) -> None:
    first_seen: dict[int, int] = {}
    errors: list[FieldError] = []
    for index, batch_id in enumerate(ids):
        if batch_id in first_seen:
            errors.append(
                FieldError(
                    loc=["body", "batch_ids", index],
                    msg=f"batch {batch_id} is listed twice (first at index {first_seen[batch_id]})",
                    type="duplicate",
                )
            )
        first_seen.setdefault(batch_id, index)
    if errors:
        duplicates = sorted({ids[e.loc[-1]] for e in errors})  # type: ignore[index]
        raise InputInvalid(
            "Invalid value for 'batch_ids': each batch may be compared once; listed more than "
            f"once: {', '.join(map(str, duplicates))}",
            errors,
        )


async def compare_batches(session: AsyncSession, ids: Sequence[int]) -> Comparison:
    """The batches side by side, in the order asked, and their means."""
    _check_distinct(ids)
    rows = await _batch_rows(session, ids)
    missing = [(index, i) for index, i in enumerate(ids) if i not in rows]
    if missing:
        names = ", ".join(str(i) for _, i in missing)
        raise NotFound(
            f"Batch not found (id {names})"
            if len(missing) == 1
            else f"Batches not found (ids {names})",
            [
                FieldError(
                    loc=["body", "batch_ids", index], msg=f"batch {i} not found", type="not_found"
                )
                for index, i in missing
            ],
        )
    comparison = []
    for batch_id in ids:
        row = rows[batch_id]
        batch = row.Batch
        # By hand: the batch's id is batch_id here, and the counts are computed from the row.
        comparison.append(
            BatchComparison(
                batch_id=batch.id,
                batch_number=batch.batch_number,
                batch_date=batch.batch_date,
                work_center=msgspec.convert(batch.work_center, WorkCenterRef, from_attributes=True),
                shift=batch.shift,
                team=batch.team,
                is_closed=batch.is_closed,
                time_to_close_seconds=batch.time_to_close_seconds,
                **_production(row),
            )
        )
    return Comparison(comparison=comparison, average=_average(list(rows.values())))


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _average(rows: Sequence[Any]) -> ComparisonAverage:
    # Rates are averaged unrounded, then rounded once.
    rates = [row.aggregated * 100.0 / row.total if row.total else 0.0 for row in rows]
    closing_times = [t for row in rows if (t := row.Batch.time_to_close_seconds) is not None]
    return ComparisonAverage(
        total_products=_mean([row.total for row in rows]) or 0.0,
        aggregated=_mean([row.aggregated for row in rows]) or 0.0,
        remaining=_mean([row.total - row.aggregated for row in rows]) or 0.0,
        aggregation_rate=_mean(rates) or 0.0,
        time_to_close_seconds=_mean(closing_times),
    )
