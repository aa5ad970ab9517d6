"""The life of a task-backed actor: claim, heartbeat, progress, cancel, finish.

`task_actor` turns `async def fn(ctx: TaskContext) -> result` into a Dramatiq actor taking a
task id. The tasks row is the source of truth:

* claim: PENDING/RETRYING (or STARTED with a dead heartbeat) -> STARTED in one UPDATE, so a
  redelivered message never runs a task twice at once, and a finished task is skipped;
* progress: throttled writes (at most 4/s) that double as the heartbeat and answer whether
  a cancel was requested;
* checkpoint: an actor that commits work in chunks stores its position with each chunk, in
  the same transaction, so a retry after `kill -9` resumes instead of redoing;
* finish: SUCCESS with the result, CANCELLED, RETRYING (transient error, attempts left) or
  FAILURE with a readable error.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import sqlalchemy.exc
import structlog
from prometheus_client import Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import transaction
from app.tasks.kinds import TASK_QUEUES
from workers.broker import broker

log = structlog.get_logger(__name__)

# Served by the worker group's metrics port (workers/__main__.py): one observation per run
# of a task, labelled by its kind and how the run ended (both closed sets).
TASK_DURATION = Histogram(
    "production_control_task_duration_seconds",
    "Time from claiming a task to finishing this run of it",
    ["kind", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)


def heartbeat_seconds() -> float:
    """Beat often enough that a live task never looks stale (TASK_STALE_AFTER)."""
    return min(5.0, get_settings().task_stale_after / 3)


PROGRESS_INTERVAL = 0.25


class TaskCancelled(Exception):
    """Raised inside an actor when the client asked to cancel the task."""


class TaskFailed(Exception):
    """An expected failure (bad file, missing batch): recorded as FAILURE, never retried."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class TaskBusy(dramatiq.Retry):
    """Another worker holds this task with a live heartbeat; look again after a pause."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=int(heartbeat_seconds() * 1000))


# Faults worth another attempt: the database or a network peer was briefly unavailable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DBAPIError,
    TaskBusy,
)


class TaskContext:
    def __init__(self, task_id: uuid.UUID, params: dict[str, Any], checkpoint: Any, attempt: int):
        self.task_id = task_id
        self.params = params
        self.checkpoint = checkpoint
        self.attempt = attempt
        self._last_progress = 0.0

    async def progress(
        self,
        current: int,
        total: int | None = None,
        message: str | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Report progress (throttled); raises TaskCancelled if a cancel was requested."""
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
        """Store resumable state with the chunk the caller is committing in `session`."""
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
        row = (
            await session.execute(
                text(
                    """
                    UPDATE tasks SET progress_current = :current,
                        progress_total = COALESCE(:total, progress_total),
                        message = COALESCE(:message, message),
                        checkpoint = COALESCE(CAST(:checkpoint AS jsonb), checkpoint),
                        heartbeat_at = now()
                    WHERE id = :id RETURNING cancel_requested
                    """
                ),
                {
                    "id": self.task_id,
                    "current": current,
                    "total": total,
                    "message": message,
                    "checkpoint": None if checkpoint is None else _json(checkpoint),
                },
            )
        ).first()
        if row is not None and row.cancel_requested:
            raise TaskCancelled()


def _json(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


async def _claim(task_id: uuid.UUID) -> Any:
    async with transaction() as session:
        row = (
            await session.execute(
                text(
                    """
                    UPDATE tasks SET status = 'STARTED', attempts = attempts + 1,
                        started_at = COALESCE(started_at, now()), heartbeat_at = now(),
                        finished_at = NULL
                    WHERE id = :id AND NOT cancel_requested AND (
                        status IN ('PENDING', 'RETRYING')
                        OR (status = 'STARTED'
                            AND heartbeat_at < now() - make_interval(secs => :stale))
                    )
                    RETURNING params, checkpoint, attempts, max_attempts
                    """
                ),
                {"id": task_id, "stale": float(get_settings().task_stale_after)},
            )
        ).first()
        if row is not None:
            return row
        current = (
            await session.execute(
                text("SELECT status, cancel_requested FROM tasks WHERE id = :id"), {"id": task_id}
            )
        ).first()
    if current is None:
        log.warning("task row missing; message dropped")
        return None
    if current.status in ("PENDING", "RETRYING") and current.cancel_requested:
        await _finish(task_id, "CANCELLED", message="Cancelled before it started")
        return None
    if current.status == "STARTED":
        raise TaskBusy(f"task {task_id} is running elsewhere")
    log.info("task already finished; redelivered message skipped", status=current.status)
    return None


async def _finish(
    task_id: uuid.UUID,
    status: str,
    *,
    result: Any = None,
    error: Any = None,
    message: str | None = None,
) -> None:
    async with transaction() as session:
        await session.execute(
            text(
                """
                UPDATE tasks SET status = :status,
                    result = COALESCE(CAST(:result AS jsonb), result),
                    error = CAST(:error AS jsonb),
                    message = COALESCE(:message, message),
                    finished_at = CASE WHEN :finished THEN now() END,
                    progress_current = CASE WHEN :succeeded
                                            THEN GREATEST(progress_current, progress_total)
                                            ELSE progress_current END
                WHERE id = :id
                """
            ),
            {
                "id": task_id,
                "status": status,
                "finished": status in ("SUCCESS", "FAILURE", "CANCELLED"),
                "succeeded": status == "SUCCESS",
                "result": None if result is None else _json(result),
                "error": None if error is None else _json(error),
                "message": message,
            },
        )


async def _heartbeat(task_id: uuid.UUID) -> None:
    while True:
        await asyncio.sleep(heartbeat_seconds())
        try:
            async with transaction() as session:
                await session.execute(
                    text(
                        "UPDATE tasks SET heartbeat_at = now() "
                        "WHERE id = :id AND status = 'STARTED'"
                    ),
                    {"id": task_id},
                )
        except Exception as exc:  # a missed beat is not fatal; the next one may land
            log.warning("heartbeat failed", error=repr(exc))


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, TaskFailed | TaskCancelled)


async def run_task(
    kind: str, task_id_text: str, fn: Callable[[TaskContext], Awaitable[Any]]
) -> None:
    task_id = uuid.UUID(task_id_text)
    structlog.contextvars.bind_contextvars(
        task_id=task_id_text, actor=kind, queue=TASK_QUEUES[kind]
    )
    try:
        claimed = await _claim(task_id)
        if claimed is None:
            return
        started = time.monotonic()
        log.info("task started", attempt=claimed.attempts)
        ctx = TaskContext(task_id, claimed.params or {}, claimed.checkpoint, claimed.attempts)
        heartbeat = asyncio.create_task(_heartbeat(task_id))
        outcome = "FAILURE"
        try:
            result = await fn(ctx)
        except TaskCancelled:
            await _finish(task_id, "CANCELLED", message="Cancelled on request")
            outcome = "CANCELLED"
            log.info("task cancelled")
            return
        except TaskFailed as exc:
            await _finish(
                task_id, "FAILURE", error={"type": "TaskFailed", "message": str(exc), **exc.details}
            )
            log.info("task failed", error=str(exc))
            return
        except Exception as exc:
            retry = is_retryable(exc) and claimed.attempts < claimed.max_attempts
            outcome = "RETRYING" if retry else "FAILURE"
            await _finish(
                task_id,
                outcome,
                error={"type": type(exc).__name__, "message": str(exc) or repr(exc)},
            )
            log.exception("task error", will_retry=retry)
            raise
        else:
            await _finish(task_id, "SUCCESS", result=result)
            outcome = "SUCCESS"
            log.info("task finished", duration_ms=round((time.monotonic() - started) * 1000, 1))
        finally:
            heartbeat.cancel()
            TASK_DURATION.labels(kind, outcome).observe(time.monotonic() - started)
    finally:
        structlog.contextvars.unbind_contextvars("task_id", "actor", "queue")


def _retry_when(max_retries: int) -> Callable[[int, BaseException], bool]:
    def retry_when(retries: int, exc: BaseException) -> bool:
        if isinstance(exc, TaskBusy):
            return True
        return is_retryable(exc) and retries < max_retries

    return retry_when


def task_actor(
    kind: str, *, time_limit_s: int = 600, max_retries: int = 3, min_backoff_ms: int = 1000
) -> Callable[[Callable[[TaskContext], Awaitable[Any]]], dramatiq.Actor[Any, Any]]:
    """Declare the actor that runs tasks of `kind` on that kind's queue."""

    def decorate(fn: Callable[[TaskContext], Awaitable[Any]]) -> dramatiq.Actor[Any, Any]:
        async def run(task_id: str) -> None:
            await run_task(kind, task_id, fn)

        run.__name__ = run.__qualname__ = kind
        run.__doc__ = fn.__doc__
        return dramatiq.actor(
            broker=broker,
            actor_name=kind,
            queue_name=TASK_QUEUES[kind],
            time_limit=time_limit_s * 1000,
            max_retries=max_retries,
            min_backoff=min_backoff_ms,
            max_backoff=5 * 60 * 1000,
            retry_when=_retry_when(max_retries),
        )(run)

    return decorate
