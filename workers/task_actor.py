"""`task_actor`: the Dramatiq actor that runs one task: lock, claim, heartbeat, run, finish.

`task_actor` turns `async def fn(ctx: TaskContext) -> result` into a Dramatiq actor taking a
task id. The tasks row is the source of truth and every status change is a function of
app/tasks/lifecycle.py (with its SQL); progress reporting is app/tasks/context.py. This
module drives them in order. The task's advisory lock (app/tasks/locks.py) says who owns it:

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
from typing import Any

import dramatiq
import sqlalchemy.exc
import structlog
from prometheus_client import Histogram

from app.broker import broker
from app.config import get_settings
from app.models import TaskStatus
from app.tasks import lifecycle
from app.tasks.context import (
    TaskCancelled,
    TaskContext,
    TaskFailed,
    TaskInterrupted,
    shutting_down,
)
from app.tasks.kinds import TASK_QUEUES
from app.tasks.locks import LOCK_CONNECTION_ERRORS, TaskLock

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


BUSY_RETRY_MS = 1_000  # the owner may die any moment: look again soon, the lock tells at once
REQUEUE_DELAY_MS = 250  # a handed-back task goes straight back to the queue


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


async def _heartbeat(lock: TaskLock, attempt: int) -> None:
    """Beat over the lock connection; a failure there means the lock is gone too."""
    while True:
        await asyncio.sleep(heartbeat_seconds())
        try:
            ours = await lifecycle.heartbeat(lock.connection, lock.task_id, attempt)
        except LOCK_CONNECTION_ERRORS as exc:
            log.warning("task lock connection failed; the task stops", error=repr(exc))
            lock.lost.set()
            return
        if not ours:  # no longer ours (another claim, an operator): stop
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
            claimed = await lifecycle.claim(lock)
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
    claimed: lifecycle.Claim,
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
        await lifecycle.finish(task_id, attempt, outcome, message="Cancelled on request")
        log.info("task cancelled")
        return
    except TaskFailed as exc:
        error = {"type": "TaskFailed", "message": str(exc), **exc.details}
        await lifecycle.finish(task_id, attempt, TaskStatus.FAILURE, error=error)
        log.info("task failed", error=str(exc))
        return
    except TaskInterrupted as exc:
        outcome = TaskStatus.RETRYING
        if await lifecycle.hand_back(task_id, attempt, str(exc)):
            log.info("task handed back to the queue", reason=str(exc))
            raise TaskRequeued(f"task {task_id} handed back: {exc}") from exc
        log.warning("task interrupted and taken over elsewhere", reason=str(exc))
        return
    except Exception as exc:
        retry = is_retryable(exc) and attempt < claimed.max_attempts
        outcome = TaskStatus.RETRYING if retry else TaskStatus.FAILURE
        await lifecycle.finish(
            task_id,
            attempt,
            outcome,
            error={"type": type(exc).__name__, "message": str(exc) or repr(exc)},
        )
        log.exception("task error", will_retry=retry)
        raise
    else:
        outcome = TaskStatus.SUCCESS
        await lifecycle.finish(task_id, attempt, outcome, result=result)
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
