from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from app.models import TaskStatus


class TaskProgress(msgspec.Struct):
    current: int
    total: int
    percent: float


class TaskOut(msgspec.Struct):
    task_id: str
    kind: str
    status: str
    progress: TaskProgress
    # JSON objects, null until the task finishes (or while it has not failed). Typed as
    # objects, not `Any`: `Any | None` would document a oneOf in which null matches twice.
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class TaskAccepted(msgspec.Struct):
    """The 202 answer of every endpoint that starts a background task."""

    task_id: str
    status: str = TaskStatus.PENDING.value
