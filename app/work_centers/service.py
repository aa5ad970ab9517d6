"""Work center reads (centers are upserted by identifier during batch ingest), with batch counts."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import Batch, WorkCenter
from app.work_centers.schemas import WorkCenterOut


def _with_counts() -> Select[*tuple[Any, ...]]:
    """Rows named as WorkCenterOut's fields, so they convert as they are."""
    counts = (
        select(
            Batch.work_center_id,
            func.count().label("batch_count"),
            func.count().filter(Batch.is_closed.is_(False)).label("open_batch_count"),
        )
        .group_by(Batch.work_center_id)
        .subquery()
    )
    return select(
        WorkCenter.id,
        WorkCenter.identifier,
        WorkCenter.name,
        func.coalesce(counts.c.batch_count, 0).label("batch_count"),
        func.coalesce(counts.c.open_batch_count, 0).label("open_batch_count"),
        WorkCenter.created_at,
        WorkCenter.updated_at,
    ).outerjoin(counts, counts.c.work_center_id == WorkCenter.id)


async def list_work_centers(
    session: AsyncSession, *, offset: int, limit: int
) -> tuple[list[WorkCenterOut], int]:
    total = (await session.execute(select(func.count()).select_from(WorkCenter))).scalar_one()
    rows = await session.execute(_with_counts().order_by(WorkCenter.id).offset(offset).limit(limit))
    return msgspec.convert(rows.all(), list[WorkCenterOut], from_attributes=True), total


async def get_work_center(session: AsyncSession, work_center_id: int) -> WorkCenterOut:
    row = (await session.execute(_with_counts().where(WorkCenter.id == work_center_id))).first()
    if row is None:
        raise NotFound(f"Work center not found (id {work_center_id})")
    return msgspec.convert(row, WorkCenterOut, from_attributes=True)
