"""Report rules: what a report holds (the batch, its hourly timeline).

Producing the file is the generate_report job, app/reports/jobs.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.service import hourly_aggregations
from app.batches.service import load_batches_brief
from app.config import get_settings
from app.errors import NotFound
from app.models import Batch
from app.reports.schemas import ReportData

# A continuous hour axis reads best; past this span only hours with aggregations are listed.
MAX_FILLED_HOURS: Final = 72


async def ensure_batch(session: AsyncSession, batch_id: int) -> None:
    if (await session.get(Batch, batch_id)) is None:
        raise NotFound(f"Batch not found (id {batch_id})")


async def hourly_timeline(
    session: AsyncSession, batch_id: int, time_zone: str
) -> list[tuple[dt.datetime, int]]:
    """Products aggregated per hour of the local clock, as aware local datetimes, with the
    empty hours in between filled in (up to MAX_FILLED_HOURS)."""
    zone = ZoneInfo(time_zone)
    counts = {
        hour.astimezone(zone): count
        for hour, count in await hourly_aggregations(session, batch_id, time_zone)
    }
    if not counts:
        return []
    first, last = min(counts), max(counts)
    span = int((last - first).total_seconds() // 3600) + 1
    if span > MAX_FILLED_HOURS:
        return sorted(counts.items())
    hours = [first + dt.timedelta(hours=i) for i in range(span)]
    return [(h, counts.get(h, 0)) for h in hours]


async def report_data(session: AsyncSession, batch_id: int) -> ReportData:
    found = await load_batches_brief(session, [batch_id])
    if not found:
        raise NotFound(f"Batch not found (id {batch_id})")
    time_zone = get_settings().tz
    return ReportData(
        batch=found[0],
        timeline=await hourly_timeline(session, batch_id, time_zone),
        generated_at=dt.datetime.now(dt.UTC),
        time_zone=time_zone,
    )
