"""HTTP for notifications: queue a test email on the high-priority fast queue."""

from __future__ import annotations

from litestar import Controller, Response, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from app.api_support import CONFLICT, INVALID, Db
from app.errors import InputInvalid
from app.idempotency import IdempotentOperation
from app.notifications.schemas import Notification, TestNotification
from app.notifications.service import enqueue_notification
from app.tasks.schemas import TaskAccepted


class NotificationController(Controller):
    path = "/api/v1/notifications"
    tags = ["notifications"]

    @post(
        "/test",
        summary="Send a test notification",
        description=(
            "Queues `send_notification` on the `fast` queue with high priority, so it jumps "
            "ahead of queued normal work. Sent by SMTP when SMTP_HOST is set, logged otherwise. "
            "202 with a task id; the task result says how it went."
        ),
        status_code=HTTP_202_ACCEPTED,
        responses={**CONFLICT, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def test_notification(
        self, db: Db, data: JSONBody[TestNotification]
    ) -> Response[TaskAccepted]:
        for key, value in (("message", data.message), ("subject", data.subject)):
            if not value.strip():
                raise InputInvalid.at(["body", key], "must not be blank", "string_blank")
        task = await enqueue_notification(
            db, Notification(to=data.email, subject=data.subject, body=data.message)
        )
        return Response(TaskAccepted(task_id=str(task.id)), status_code=HTTP_202_ACCEPTED)
