"""HTTP for reports: queue an Excel or PDF report of one batch."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from app.api_support import CONFLICT, INVALID, NOT_FOUND, Db
from app.idempotency import IdempotentOperation
from app.outbox import enqueue_task
from app.reports.schemas import ReportRequest
from app.reports.service import ensure_batch
from app.schemas import PositiveId
from app.tasks.schemas import TaskAccepted


class ReportController(Controller):
    path = "/api/v1/batches/{batch_id:str}/reports"
    tags = ["reports"]

    @post(
        "/",
        summary="Generate a batch report (Excel or PDF)",
        description=(
            "202 with a task id; the `generate_report` task (heavy queue) renders the report, "
            "stores it in S3 and its result is `{file_url, file_name, size, expires_at}` with a "
            "presigned link valid for PRESIGN_TTL (7 days). Excel: sheets 'Batch info', "
            "'Products', 'Statistics' (native charts). PDF: the same facts with charts and a "
            "paginated product table. With `email` the link is also mailed. Event "
            "`report_generated`."
        ),
        status_code=HTTP_202_ACCEPTED,
        responses={**CONFLICT, **NOT_FOUND, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def create_report(
        self, db: Db, batch_id: PositiveId, data: JSONBody[ReportRequest]
    ) -> Response[TaskAccepted]:
        await ensure_batch(db, batch_id)
        params: dict[str, Any] = {"batch_id": batch_id, "format": data.format}
        if isinstance(data.email, str):
            params["email"] = data.email
        task = await enqueue_task(db, "generate_report", params, max_attempts=3)
        return Response(TaskAccepted(task_id=str(task.id)), status_code=HTTP_202_ACCEPTED)
