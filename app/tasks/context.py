"""What a job sees of its task: parameters, checkpoint, progress reporting, cancel and stop.

A job (`app/<feature>/jobs.py`) takes a TaskContext, or only a Progress callback when it
needs no more; workers/task_actor.py builds the context once it has claimed the task. The
writes go through app/tasks/lifecycle.py, fenced by the claim's attempt.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.tasks import lifecycle
from app.tasks.locks import TaskLock

PROGRESS_INTERVAL = 0.25

# Set once this worker process is told to stop (SIGTERM/SIGINT; the broker's WorkerSetup
# middleware sets it): long chunked tasks then hand their task back at the next chunk
# boundary instead of running to the end.
shutting_down = threading.Event()

# (current, total, message): what a job that only reports progress is given.
Progress = Callable[[int, int, str], Awaitable[None]]


class TaskCancelled(Exception):
    """Raised inside an actor when the client asked to cancel the task."""


class TaskFailed(Exception):
    """An expected failure (bad file, missing batch): recorded as FAILURE, never retried."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class TaskInterrupted(Exception):
    """Raised inside an actor that must stop now: its worker is stopping or lost the task."""


class JobContext(Protocol):
    """What a resumable job needs from its task (TaskContext provides it; tests may fake it)."""

    task_id: uuid.UUID
    params: dict[str, Any]
    checkpoint: Any

    async def progress(
        self,
        current: int,
        total: int | None = None,
        message: str | None = None,
        *,
        force: bool = False,
    ) -> None: ...

    async def save_checkpoint(
        self,
        session: AsyncSession,
        state: Any,
        current: int,
        total: int | None = None,
        message: str | None = None,
    ) -> None: ...


class TaskContext:
    def __init__(
        self,
        task_id: uuid.UUID,
        params: dict[str, Any],
        checkpoint: Any,
        attempt: int,
        *,
        lock: TaskLock | None = None,
        stops_on_shutdown: bool = False,
    ) -> None:
        self.task_id = task_id
        self.params = params
        self.checkpoint = checkpoint
        self.attempt = attempt
        self.lock = lock
        self.stops_on_shutdown = stops_on_shutdown
        self._last_progress = 0.0

    def check_interrupted(self) -> None:
        """Raise TaskInterrupted if this task lost its lock or must stop for a shutdown."""
        if self.lock is not None and self.lock.lost.is_set():
            raise TaskInterrupted("the task's lock connection was lost")
        if self.stops_on_shutdown and shutting_down.is_set():
            raise TaskInterrupted("the worker is shutting down")

    async def progress(
        self,
        current: int,
        total: int | None = None,
        message: str | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Report progress (throttled); raises TaskCancelled if a cancel was requested."""
        self.check_interrupted()
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        async with transaction() as session:
            await self._write_progress(session, current, total, message, None)

    async def save_checkpoint(
        self,
        session: AsyncSession,
        state: Any,
        current: int,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Store resumable state with the chunk the caller is committing in `session`.

        Raises (rolling the chunk back with the caller's transaction) when this worker no
        longer owns the task or is stopping: the previous checkpoint stays the truth.
        """
        self.check_interrupted()
        self.checkpoint = state
        self._last_progress = time.monotonic()
        await self._write_progress(session, current, total, message, state)

    async def _write_progress(
        self,
        session: AsyncSession,
        current: int,
        total: int | None,
        message: str | None,
        checkpoint: Any,
    ) -> None:
        outcome = await lifecycle.record_progress(
            session, self.task_id, self.attempt, current, total, message, checkpoint
        )
        if outcome == "taken_over":  # a newer claim (or the reaper) took it: not ours any more
            raise TaskInterrupted("the task was taken over by another claim")
        if outcome == "cancel_requested":
            raise TaskCancelled()
