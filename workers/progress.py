"""The life of a task-backed actor: lock, claim, heartbeat, progress, cancel, finish.

`task_actor` turns `async def fn(ctx: TaskContext) -> result` into a Dramatiq actor taking a
task id. The tasks row is the source of truth; the task's advisory lock (app/tasks/locks.py)
says who owns it:

* lock: before claiming, the worker opens a dedicated connection (TCP keepalives on) and
  takes the task's session advisory lock, held until the task is finished. Not obtainable
  means a live worker runs it: TaskBusy, look again in ~1 s. PostgreSQL frees the lock the
  moment the owner's connection ends (process killed; a vanished host within the keepalive
  bound), so a redelivered message takes over within a second or two, not TASK_STALE_AFTER;
* claim: with the lock, PENDING/RETRYING/STARTED -> STARTED in one locked transaction
  (STARTED here means its owner died: it held the lock until then). `attempts` grows with
  every claim and is the owner's fence token; a finished or cancelled task is skipped;
* heartbeat: beats over the lock connection; a failed beat or a fence mismatch means the
  lock (and so the task) is lost, and the actor stops at its next progress call;
* progress: throttled writes (at most 4/s) that answer whether a cancel was requested;
* checkpoint: an actor that commits work in chunks stores its position with each chunk, in
  the same transaction, fenced by `attempts`: a stale owner's chunk rolls back;
* shutdown: actors declared `stops_on_shutdown` hand their task back (RETRYING, the attempt
  not counted) at the next progress call once the worker is stopping, and their message
  goes back to the queue; others finish within dramatiq's shutdown timeout;
* finish: SUCCESS with the result, CANCELLED, RETRYING (transient error, attempts left) or
  FAILURE with a readable error, fenced; then the lock connection closes (every path).

Races, with the row lock on the tasks row and the advisory lock deciding each:

* claim vs claim (redelivery, reaper's message, a duplicate): one gets the lock, the others
  get TaskBusy and, once it is released, find the task finished (skipped) or RETRYING.
* claim vs the old owner finishing: the owner writes its final status and only then closes
  the lock connection; the claim cannot see STARTED without the lock being free.
* claim vs reaper: the reaper confirms a free lock with pg_try_advisory_xact_lock under the
  row lock. If the worker locked first, the reaper skips the task; if the reaper did, the
  worker gets TaskBusy and claims the RETRYING task a second later.
* lost lock, live owner (database restart, partition): the reaper or a redelivery may start
  a new owner; the old one's next checkpoint/progress/finish matches no row (fence) and it
  stops, rolling back its chunk, so no chunk is committed twice.
* cancel vs claim: both lock the row. A cancel on a STARTED task whose owner died is applied
  by the next claim (CANCELLED); on a running one at its next progress call.
* shutdown vs finish: the hand-back is fenced too; a task that was taken over meanwhile is
  left to its new owner and the message is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import dramatiq
import msgspec
import sqlalchemy.exc
import structlog
from prometheus_client import Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.broker import broker, shutting_down
from app.config import get_settings
from app.db import transaction
from app.models import FINISHED_STATUSES, TaskStatus
from app.tasks.kinds import TASK_QUEUES
from app.tasks.locks import TASK_LOCK_APPLICATION, TASK_LOCK_NAMESPACE, task_lock_key

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
BUSY_RETRY_MS = 1_000  # the owner may die any moment: look again soon, the lock tells at once
REQUEUE_DELAY_MS = 250  # a handed-back task goes straight back to the queue
LOCK_TIMEOUT = 5.0  # seconds for one statement or close on the lock connection

LOCK_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class TaskCancelled(Exception):
    """Raised inside an actor when the client asked to cancel the task."""


class TaskFailed(Exception):
    """An expected failure (bad file, missing batch): recorded as FAILURE, never retried."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class TaskInterrupted(Exception):
    """Raised inside an actor that must stop now: its worker is stopping or lost the task."""


class TaskBusy(dramatiq.Retry):
    """A live worker holds this task's lock; look again shortly."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=BUSY_RETRY_MS)


class TaskRequeued(dramatiq.Retry):
    """The task was handed back (worker stopping): its message goes back to the queue."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=REQUEUE_DELAY_MS)


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


class TaskLock:
    """The task's session advisory lock, held by a dedicated connection for the whole run."""

    def __init__(self, task_id: uuid.UUID, connection: asyncpg.Connection) -> None:
        self.task_id = task_id
        self.connection = connection
        self.lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: self.lost.set())

    @classmethod
    async def try_acquire(cls, task_id: uuid.UUID) -> TaskLock | None:
        """The lock if nobody holds it, else None (the connection is closed again)."""
        connection = await asyncpg.connect(
            get_settings().sync_database_url,
            timeout=10,
            server_settings={
                "application_name": f"{TASK_LOCK_APPLICATION}{task_id}"[:63],
                # A vanished host's connection (and lock) is dropped after ~10 + 3 x 5 s idle.
                "tcp_keepalives_idle": "10",
                "tcp_keepalives_interval": "5",
                "tcp_keepalives_count": "3",
            },
        )
        try:
            await connection.set_type_codec(
                "jsonb",
                schema="pg_catalog",
                encoder=lambda value: msgspec.json.encode(value).decode(),
                decoder=msgspec.json.decode,
            )
            acquired = await connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)",
                TASK_LOCK_NAMESPACE,
                task_lock_key(task_id),
                timeout=LOCK_TIMEOUT,
            )
        except BaseException:
            connection.terminate()
            raise
        if not acquired:
            await _close(connection)
            return None
        return cls(task_id, connection)

    async def release(self) -> None:
        """Give the lock up by closing its connection (the only way it is held)."""
        await _close(self.connection)


async def _close(connection: asyncpg.Connection) -> None:
    if connection.is_closed():
        return
    try:
        await asyncio.wait_for(connection.close(), timeout=LOCK_TIMEOUT)
    except LOCK_CONNECTION_ERRORS:
        connection.terminate()


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
        row = (
            await session.execute(
                text(
                    """
                    UPDATE tasks SET progress_current = :current,
                        progress_total = COALESCE(:total, progress_total),
                        message = COALESCE(:message, message),
                        checkpoint = COALESCE(CAST(:checkpoint AS jsonb), checkpoint),
                        heartbeat_at = now()
                    WHERE id = :id AND status = :started AND attempts = :attempt
                    RETURNING cancel_requested
                    """
                ),
                {
                    "id": self.task_id,
                    "started": TaskStatus.STARTED.value,
                    "attempt": self.attempt,
                    "current": current,
                    "total": total,
                    "message": message,
                    "checkpoint": None if checkpoint is None else _json(checkpoint),
                },
            )
        ).first()
        if row is None:
            exists = (
                await session.execute(
                    text("SELECT 1 FROM tasks WHERE id = :id"), {"id": self.task_id}
                )
            ).first()
            if exists is not None:  # a newer claim (or the reaper) took it: not ours any more
                raise TaskInterrupted("the task was taken over by another claim")
            return
        if row.cancel_requested:
            raise TaskCancelled()


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@dataclass(frozen=True)
class Claim:
    params: dict[str, Any]
    checkpoint: Any
    attempts: int
    max_attempts: int


async def _claim(lock: TaskLock) -> Claim | None:
    """Take the task (we hold its lock); None when there is nothing to run."""
    connection, task_id = lock.connection, lock.task_id
    async with connection.transaction():
        current = await connection.fetchrow(
            "SELECT status, cancel_requested, attempts, max_attempts FROM tasks "
            "WHERE id = $1 FOR UPDATE",
            task_id,
            timeout=LOCK_TIMEOUT,
        )
        if current is None:
            log.warning("task row missing; message dropped")
            return None
        status = TaskStatus(current["status"])
        if status in FINISHED_STATUSES:
            log.info("task already finished; redelivered message skipped", status=status)
            return None
        if current["cancel_requested"]:
            await connection.execute(
                "UPDATE tasks SET status = $2, finished_at = now(), message = $3 WHERE id = $1",
                task_id,
                TaskStatus.CANCELLED.value,
                "Cancelled on request"
                if status == TaskStatus.STARTED
                else "Cancelled before it started",
            )
            return None
        if status == TaskStatus.STARTED and current["attempts"] >= current["max_attempts"]:
            # Its owner died on the last allowed attempt (the reaper's rule, applied sooner).
            await connection.execute(
                "UPDATE tasks SET status = $2, finished_at = now(), error = $3 WHERE id = $1",
                task_id,
                TaskStatus.FAILURE.value,
                {
                    "type": "WorkerLost",
                    "message": "The worker running this task stopped responding",
                },
            )
            log.warning("task lost its worker on its last attempt; failed")
            return None
        row = await connection.fetchrow(
            """
            UPDATE tasks SET status = $2, attempts = attempts + 1,
                started_at = COALESCE(started_at, now()), heartbeat_at = now(),
                finished_at = NULL
            WHERE id = $1
            RETURNING params, checkpoint, attempts, max_attempts
            """,
            task_id,
            TaskStatus.STARTED.value,
        )
    if status == TaskStatus.STARTED:
        log.info("task taken over from a worker that is gone")
    return Claim(row["params"] or {}, row["checkpoint"], row["attempts"], row["max_attempts"])


async def _finish(
    task_id: uuid.UUID,
    attempt: int,
    status: TaskStatus,
    *,
    result: Any = None,
    error: Any = None,
    message: str | None = None,
) -> bool:
    """Record the outcome of our attempt; False if the task is no longer ours (fence)."""
    async with transaction() as session:
        row = (
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
                    WHERE id = :id AND status = :started AND attempts = :attempt
                    RETURNING id
                    """
                ),
                {
                    "id": task_id,
                    "attempt": attempt,
                    "started": TaskStatus.STARTED.value,
                    "status": status.value,
                    "finished": status in FINISHED_STATUSES,
                    "succeeded": status == TaskStatus.SUCCESS,
                    "result": None if result is None else _json(result),
                    "error": None if error is None else _json(error),
                    "message": message,
                },
            )
        ).first()
    if row is None:
        log.warning("task was taken over by another claim; outcome not recorded", status=status)
    return row is not None


async def _hand_back(task_id: uuid.UUID, attempt: int, reason: str) -> bool:
    """Put our STARTED task back to RETRYING, checkpoint kept; the attempt is not counted."""
    async with transaction() as session:
        row = (
            await session.execute(
                text(
                    """
                    UPDATE tasks SET status = :retrying, max_attempts = max_attempts + 1,
                        message = :message
                    WHERE id = :id AND status = :started AND attempts = :attempt
                    RETURNING id
                    """
                ),
                {
                    "id": task_id,
                    "attempt": attempt,
                    "started": TaskStatus.STARTED.value,
                    "retrying": TaskStatus.RETRYING.value,
                    "message": f"Interrupted ({reason}); resumes from its checkpoint",
                },
            )
        ).first()
    return row is not None


async def _heartbeat(lock: TaskLock, attempt: int) -> None:
    """Beat over the lock connection; a failure there means the lock is gone too."""
    while True:
        await asyncio.sleep(heartbeat_seconds())
        try:
            outcome = await lock.connection.execute(
                "UPDATE tasks SET heartbeat_at = now() "
                "WHERE id = $1 AND status = $2 AND attempts = $3",
                lock.task_id,
                TaskStatus.STARTED.value,
                attempt,
                timeout=LOCK_TIMEOUT,
            )
        except LOCK_CONNECTION_ERRORS as exc:
            log.warning("task lock connection failed; the task stops", error=repr(exc))
            lock.lost.set()
            return
        if outcome == "UPDATE 0":  # no longer ours (another claim, an operator): stop
            lock.lost.set()
            return


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, TaskFailed | TaskCancelled)


async def run_task(
    kind: str,
    task_id_text: str,
    fn: Callable[[TaskContext], Awaitable[Any]],
    *,
    stops_on_shutdown: bool = False,
) -> None:
    task_id = uuid.UUID(task_id_text)
    structlog.contextvars.bind_contextvars(
        task_id=task_id_text, actor=kind, queue=TASK_QUEUES[kind]
    )
    try:
        if stops_on_shutdown and shutting_down.is_set():
            raise TaskRequeued(f"task {task_id} not started: the worker is shutting down")
        lock = await TaskLock.try_acquire(task_id)
        if lock is None:
            raise TaskBusy(f"task {task_id} is running elsewhere")
        try:
            claimed = await _claim(lock)
            if claimed is not None:
                ctx = TaskContext(
                    task_id,
                    claimed.params,
                    claimed.checkpoint,
                    claimed.attempts,
                    lock=lock,
                    stops_on_shutdown=stops_on_shutdown,
                )
                await _run_claimed(kind, lock, claimed, ctx, fn)
        finally:
            await lock.release()
    finally:
        structlog.contextvars.unbind_contextvars("task_id", "actor", "queue")


async def _run_claimed(
    kind: str,
    lock: TaskLock,
    claimed: Claim,
    ctx: TaskContext,
    fn: Callable[[TaskContext], Awaitable[Any]],
) -> None:
    started = time.monotonic()
    task_id, attempt = lock.task_id, claimed.attempts
    log.info("task started", attempt=attempt)
    heartbeat = asyncio.create_task(_heartbeat(lock, attempt))
    outcome = TaskStatus.FAILURE
    try:
        result = await fn(ctx)
    except TaskCancelled:
        outcome = TaskStatus.CANCELLED
        await _finish(task_id, attempt, outcome, message="Cancelled on request")
        log.info("task cancelled")
        return
    except TaskFailed as exc:
        error = {"type": "TaskFailed", "message": str(exc), **exc.details}
        await _finish(task_id, attempt, TaskStatus.FAILURE, error=error)
        log.info("task failed", error=str(exc))
        return
    except TaskInterrupted as exc:
        outcome = TaskStatus.RETRYING
        if await _hand_back(task_id, attempt, str(exc)):
            log.info("task handed back to the queue", reason=str(exc))
            raise TaskRequeued(f"task {task_id} handed back: {exc}") from exc
        log.warning("task interrupted and taken over elsewhere", reason=str(exc))
        return
    except Exception as exc:
        retry = is_retryable(exc) and attempt < claimed.max_attempts
        outcome = TaskStatus.RETRYING if retry else TaskStatus.FAILURE
        await _finish(
            task_id,
            attempt,
            outcome,
            error={"type": type(exc).__name__, "message": str(exc) or repr(exc)},
        )
        log.exception("task error", will_retry=retry)
        raise
    else:
        outcome = TaskStatus.SUCCESS
        await _finish(task_id, attempt, outcome, result=result)
        log.info("task finished", duration_ms=round((time.monotonic() - started) * 1000, 1))
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        TASK_DURATION.labels(kind, outcome.value).observe(time.monotonic() - started)


def _retry_when(max_retries: int) -> Callable[[int, BaseException], bool]:
    def retry_when(retries: int, exc: BaseException) -> bool:
        if isinstance(exc, TaskBusy | TaskRequeued):
            return True  # not failures: the task waits for its owner or was handed back
        return is_retryable(exc) and retries < max_retries

    return retry_when


def task_actor(
    kind: str,
    *,
    time_limit_s: int = 600,
    max_retries: int = 3,
    min_backoff_ms: int = 1000,
    stops_on_shutdown: bool = False,
) -> Callable[[Callable[[TaskContext], Awaitable[Any]]], dramatiq.Actor[Any, Any]]:
    """Declare the actor that runs tasks of `kind` on that kind's queue.

    `stops_on_shutdown`: a long, chunked actor whose progress calls are safe stopping points;
    when the worker is stopping it hands the task back there instead of running to the end.
    """

    def decorate(fn: Callable[[TaskContext], Awaitable[Any]]) -> dramatiq.Actor[Any, Any]:
        async def run(task_id: str) -> None:
            await run_task(kind, task_id, fn, stops_on_shutdown=stops_on_shutdown)

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
