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
    # Any JSON, null until the task finishes (`Any | None` would document an ambiguous oneOf).
    result: Any
    error: Any
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class TaskAccepted(msgspec.Struct):
    """The 202 answer of every endpoint that starts a background task."""

    task_id: str
    status: str = TaskStatus.PENDING.value
