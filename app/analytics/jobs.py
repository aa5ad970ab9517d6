"""The refresh_statistics job: recompute and store the dashboard snapshot (own transaction).

Run every 5 minutes by refresh_statistics, and by the dashboard endpoint when the snapshot
is stale; the advisory lock makes concurrent refreshes wait for one computation.
"""

from __future__ import annotations

import datetime as dt
import time

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.schemas import Dashboard
from app.analytics.service import (
    DASHBOARD_LOCK_KEY,
    DASHBOARD_SNAPSHOT,
    compute_dashboard,
    fresh_snapshot,
    is_fresh,
    read_snapshot,
)
from app.cache import current_snapshot
from app.db import transaction
from app.models import StatisticsSnapshot


async def refresh_dashboard(
    *, force: bool, not_before: dt.datetime | None = None
) -> tuple[Dashboard, float | None]:
    """Recompute and store the dashboard snapshot; returns it and the compute time in ms.

    Without `force`, a snapshot made fresh meanwhile (by whoever held the lock, at or after
    `not_before`) is returned as is (compute time None).
    """
    async with transaction() as session:
        await session.execute(select(func.pg_advisory_xact_lock(DASHBOARD_LOCK_KEY)))
        now = dt.datetime.now(dt.UTC)
        if not force:
            stored = await read_snapshot(session)
            current = None if stored is None else stored[0]
            recent = not_before is None or (
                current is not None and current.generated_at >= not_before
            )
            if current is not None and is_fresh(current, now) and recent:
                return current, None
        # Taken before the computation reads anything: what it may not include.
        source = await current_snapshot(session)
        started = time.perf_counter()
        dashboard = await compute_dashboard(session, now)
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        values = {
            "name": DASHBOARD_SNAPSHOT,
            "data": msgspec.to_builtins(dashboard),
            "computed_at": now,
            "duration_ms": duration_ms,
            "source_snapshot": source,
        }
        stmt = pg_insert(StatisticsSnapshot).values(values)
        await session.execute(
            stmt.on_conflict_do_update(index_elements=[StatisticsSnapshot.name], set_=values)
        )
    return dashboard, duration_ms


async def dashboard(session: AsyncSession) -> Dashboard:
    """The latest snapshot if nothing it summarises changed since; else a new one (refreshed
    in its own transaction, which is why the endpoint's read-through lives with the job)."""
    decided_at = dt.datetime.now(dt.UTC)
    current = await fresh_snapshot(session, decided_at)
    if current is not None:
        return current
    return (await refresh_dashboard(force=False, not_before=decided_at))[0]
