"""HTTP for work centers (upserted by identifier during ingest), with batch counts."""

from __future__ import annotations

from litestar import Controller, get

from app.api_support import INVALID, NOT_FOUND, Db
from app.schemas import Limit, Offset, Page, PositiveId
from app.work_centers import service
from app.work_centers.schemas import WorkCenterOut


class WorkCenterController(Controller):
    path = "/api/v1/work-centers"
    tags = ["work centers"]

    @get("/", summary="List work centers with batch counts", responses=INVALID)
    async def list_work_centers(
        self, db: Db, offset: Offset = 0, limit: Limit = 20
    ) -> Page[WorkCenterOut]:
        items, total = await service.list_work_centers(db, offset=offset, limit=limit)
        return Page(items=items, total=total, offset=offset, limit=limit)

    @get("/{work_center_id:str}", summary="Get a work center", responses={**NOT_FOUND, **INVALID})
    async def get_work_center(self, db: Db, work_center_id: PositiveId) -> WorkCenterOut:
        return await service.get_work_center(db, work_center_id)
