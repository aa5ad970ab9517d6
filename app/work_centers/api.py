"""HTTP for work centers (upserted by identifier during ingest), with batch counts."""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar import Controller, get
from sqlalchemy import func, select

from app.api_support import INVALID, NOT_FOUND, Db
from app.errors import NotFound
from app.models import Batch, WorkCenter
from app.schemas import Limit, Offset, Page, PositiveId


class WorkCenterOut(msgspec.Struct):
    id: int
    identifier: str
    name: str
    batch_count: int
    open_batch_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


def _with_counts():  # type: ignore[no-untyped-def]
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
        WorkCenter,
        func.coalesce(counts.c.batch_count, 0),
        func.coalesce(counts.c.open_batch_count, 0),
    ).outerjoin(counts, counts.c.work_center_id == WorkCenter.id)


def _out(wc: WorkCenter, batch_count: int, open_count: int) -> WorkCenterOut:
    return WorkCenterOut(
        wc.id, wc.identifier, wc.name, batch_count, open_count, wc.created_at, wc.updated_at
    )


class WorkCenterController(Controller):
    path = "/api/v1/work-centers"
    tags = ["work centers"]

    @get("/", summary="List work centers with batch counts", responses=INVALID)
    async def list_work_centers(
        self, db: Db, offset: Offset = 0, limit: Limit = 20
    ) -> Page[WorkCenterOut]:
        total = (await db.execute(select(func.count()).select_from(WorkCenter))).scalar_one()
        rows = await db.execute(_with_counts().order_by(WorkCenter.id).offset(offset).limit(limit))
        return Page(
            items=[_out(*row) for row in rows.all()], total=total, offset=offset, limit=limit
        )

    @get("/{work_center_id:str}", summary="Get a work center", responses={**NOT_FOUND, **INVALID})
    async def get_work_center(self, db: Db, work_center_id: PositiveId) -> WorkCenterOut:
        row = (await db.execute(_with_counts().where(WorkCenter.id == work_center_id))).first()
        if row is None:
            raise NotFound(f"Work center {work_center_id} not found")
        return _out(*row)
