"""HTTP for analytics: the dashboard, batch statistics, batch comparison (read-only)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from app.analytics import jobs, service
from app.analytics.schemas import (
    MAX_COMPARED,
    MIN_COMPARED,
    BatchStatistics,
    CompareRequest,
    Comparison,
    Dashboard,
)
from app.api_support import INVALID, NOT_FOUND, Db
from app.cache import DASHBOARD_TAGS, STATISTICS_TTL, batch_tags, read_cache
from app.schemas import PositiveId


class AnalyticsController(Controller):
    path = "/api/v1"
    tags = ["analytics"]

    @get(
        "/analytics/dashboard",
        summary="Dashboard figures",
        description=(
            "Totals, today's figures (batches dated today, products aggregated and batches "
            "closed today, open batches whose shift ends today), figures per shift and the "
            "top work centers by aggregated products. Served from the snapshot "
            "refresh_statistics computes every 5 minutes, recomputed first when data changed "
            "since; `generated_at` is its time. Cached 5 minutes, dropped by any write."
        ),
    )
    async def dashboard(self, db: Db) -> Dashboard:
        return await read_cache.get_or_compute(
            ("dashboard",),
            lambda: jobs.dashboard(db),
            ttl=service.snapshot_ttl,
            tags=DASHBOARD_TAGS,
        )

    @get(
        [
            "/analytics/batches/{batch_id:str}/statistics",
            "/batches/{batch_id:str}/statistics",
        ],
        summary="Statistics of one batch",
        description=(
            "Product counts and aggregation rate, the aggregation timeline by hour, and the "
            "time from shift start to closing."
        ),
        responses={**NOT_FOUND, **INVALID},
    )
    async def batch_statistics(self, db: Db, batch_id: PositiveId) -> BatchStatistics:
        return await read_cache.get_or_compute(
            ("statistics", batch_id),
            lambda: service.batch_statistics(db, batch_id),
            ttl=STATISTICS_TTL,
            tags=lambda statistics: batch_tags(statistics.batch_info),
            weight=lambda statistics: len(statistics.timeline),
        )

    @post(
        "/analytics/compare-batches",
        summary="Compare batches side by side",
        description=(
            f"{MIN_COMPARED}..{MAX_COMPARED} distinct batch ids; `comparison` follows their "
            "order, `average` holds the means (the rate is the mean of the batches' rates). "
            "An unknown id is a 404 naming it."
        ),
        status_code=HTTP_200_OK,
        responses={**NOT_FOUND, **INVALID},
    )
    async def compare_batches(self, db: Db, data: JSONBody[CompareRequest]) -> Comparison:
        return await service.compare_batches(db, data.batch_ids)
