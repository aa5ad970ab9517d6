"""HTTP for tasks: status and progress, list, cancel, and an SSE progress stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_200_OK

from app.api_support import CONFLICT, INVALID, NOT_FOUND, Db
from app.db import get_sessionmaker
from app.errors import NotFound
from app.idempotency import IdempotentOperation
from app.models import FINISHED_STATUSES, TaskStatus
from app.schemas import NO_NUL, Limit, Offset, Page
from app.tasks import service
from app.tasks.kinds import TASK_QUEUES
from app.tasks.schemas import TaskOut

StatusFilter = Annotated[
    TaskStatus | None,
    Parameter(description="PENDING, STARTED, SUCCESS, FAILURE, CANCELLED, RETRYING"),
]
# The path segment is matched as text and converted by the signature model, so a malformed
# id is a 422 naming `task_id` instead of a 404 for an unmatched route.
TaskId = Annotated[uuid.UUID, Parameter(description="Task id (UUID)")]
SSE_POLL_SECONDS = 0.5


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ["tasks"]

    @get(
        "/{task_id:str}",
        summary="Task status, progress and result",
        responses={**NOT_FOUND, **INVALID},
    )
    async def get_task(self, db: Db, task_id: TaskId) -> TaskOut:
        return await service.get_task(db, task_id)

    @get("/", summary="List tasks", responses=INVALID)
    async def list_tasks(
        self,
        db: Db,
        status: StatusFilter = None,
        kind: Annotated[
            str | None, Parameter(pattern=NO_NUL, description=", ".join(TASK_QUEUES))
        ] = None,
        offset: Offset = 0,
        limit: Limit = 20,
    ) -> Page[TaskOut]:
        items, total = await service.list_tasks(
            db, status=status.value if status else None, kind=kind, offset=offset, limit=limit
        )
        return Page(items=items, total=total, offset=offset, limit=limit)

    @post(
        "/{task_id:str}/cancel",
        summary="Cancel a task",
        description=(
            "A pending task is cancelled at once; a running one stops at its next progress report."
        ),
        status_code=HTTP_200_OK,
        responses={**NOT_FOUND, **CONFLICT, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def cancel_task(self, db: Db, task_id: TaskId) -> TaskOut:
        return await service.cancel_task(db, task_id)

    @get(
        "/{task_id:str}/events",
        summary="Stream task progress (Server-Sent Events)",
        description="One `progress` event per change; the stream ends with the final state.",
        responses={**NOT_FOUND, **INVALID},
    )
    async def task_events(self, db: Db, task_id: TaskId) -> ServerSentEvent:
        first = await service.get_task(db, task_id)  # 404 before the stream starts
        return ServerSentEvent(_progress_stream(task_id, first))


async def _progress_stream(
    task_id: uuid.UUID, first: TaskOut
) -> AsyncIterator[ServerSentEventMessage]:
    last: bytes | None = None
    current = first
    while True:
        encoded = msgspec.json.encode(current)
        if encoded != last:
            last = encoded
            yield ServerSentEventMessage(
                data=encoded.decode(), event="progress", id=str(current.progress.current)
            )
        if current.status in FINISHED_STATUSES:
            return
        await asyncio.sleep(SSE_POLL_SECONDS)
        async with get_sessionmaker()() as session:
            try:
                current = await service.get_task(session, task_id)
            except NotFound:  # pruned meanwhile: end the stream instead of breaking it
                return
