"""The scheduler as real processes: replicas fire each (job, fire_time) exactly once, a leader
killed mid-schedule is replaced without a gap, a restarted scheduler neither repeats nor
skips a fire that came due while it was down; `make scheduler-run` and GET /schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.db import transaction
from app.outbox import outbox_events
from app.schedule.leader_lock import APPLICATION_PREFIX, LEADER_LOCK_KEY
from app.schedule.plan import SCHEDULE
from tests import support
from tests.conftest import wait_for_task
from tests.factories import create_batches, shift_task_en

pytestmark = pytest.mark.e2e

WATCHED = "reap_stale_tasks"  # the job whose fires the timing assertions follow
JOB_NAMES = {job.name for job in SCHEDULE}


class SchedulerProcess:
    """`python -m scheduler` with a fast, cron-aligned test schedule."""

    def __init__(self, every_s: int, grace_s: int = 30) -> None:
        self.env = {
            **os.environ,
            **support.test_environment(),
            "SCHEDULER_TEST_INTERVAL": str(every_s),
            "SCHEDULER_MISFIRE_GRACE": str(grace_s),
            "SCHEDULER_LEADER_RETRY": "0.3",
            "LOG_LEVEL": "INFO",
        }
        self.log = Path(tempfile.mkstemp(prefix="scheduler-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def id(self) -> str:
        assert self.process is not None
        return f"{socket.gethostname()}:{self.process.pid}"

    def start(self) -> SchedulerProcess:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scheduler"],
                cwd=support.ROOT,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the lock goes only because the connection dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        assert self.process is not None
        assert self.process.returncode in (0, -signal.SIGKILL), self.log.read_text()[-3000:]


@pytest.fixture
def schedulers() -> Iterator[list[SchedulerProcess]]:
    started: list[SchedulerProcess] = []
    yield started
    for process in started:
        process.stop()
        process.log.unlink(missing_ok=True)


async def query(statement: str, **params: Any) -> list[Any]:
    async with transaction() as session:
        return list((await session.execute(text(statement), params)).all())


async def leader() -> str | None:
    rows = await query(
        """
        SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objid = CAST(:key AS oid)
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        key=LEADER_LOCK_KEY,
    )
    return rows[0][0].removeprefix(APPLICATION_PREFIX) if rows else None


def leader_is(expected: str) -> Callable[[], Awaitable[str | None]]:
    """Wait for a specific leader: a killed one keeps the lock until PostgreSQL notices."""

    async def check() -> str | None:
        current = await leader()
        return current if current == expected else None

    return check


async def runs(job: str = WATCHED) -> list[Any]:
    return await query(
        "SELECT fire_time, scheduler_id, created_at, task_id FROM scheduler_runs "
        "WHERE job_name = :job ORDER BY fire_time",
        job=job,
    )


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := await check():
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def run_count_at_least(n: int) -> Callable[[], Awaitable[list[Any] | None]]:
    async def check() -> list[Any] | None:
        found = await runs()
        return found if len(found) >= n else None

    return check


async def round_complete(fire_time: dt.datetime) -> None:
    """Wait until every job has been fired for `fire_time`.

    The tests kill a scheduler between rounds: one killed mid-round leaves the other jobs'
    fire of that time to the next leader, which coalesces it away if it only leads after
    the following fire is due (by design: several missed fires run once, the latest).
    """

    async def check() -> bool:
        rows = await query(
            "SELECT count(*) FROM scheduler_runs WHERE fire_time = :t AND task_id IS NOT NULL",
            t=fire_time,
        )
        return bool(rows[0][0] == len(JOB_NAMES))

    await eventually(check)


async def assert_each_fire_enqueued_once(every_s: int) -> dict[str, list[dt.datetime]]:
    """Every job: cron-aligned fire times, one step apart (none skipped), one task each."""
    fires: dict[str, list[dt.datetime]] = {}
    for job, fire_time, task_id, tasks in await query(
        """
        SELECT r.job_name, r.fire_time, r.task_id,
               (SELECT count(*) FROM tasks t
                 WHERE t.kind = r.job_name AND t.params->>'fire_time' = to_char(
                     r.fire_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'))
        FROM scheduler_runs r ORDER BY r.job_name, r.fire_time
        """
    ):
        assert task_id is not None
        assert tasks == 1, (job, fire_time, tasks)
        assert fire_time.microsecond == 0
        assert fire_time.second % every_s == 0
        fires.setdefault(job, []).append(fire_time)
    assert set(fires) == JOB_NAMES
    step = dt.timedelta(seconds=every_s)
    for job, times in fires.items():
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap == step for gap in gaps), (job, times)
    total_tasks = (
        await query("SELECT count(*) FROM tasks WHERE kind = ANY(:k)", k=list(JOB_NAMES))
    )[0][0]
    assert total_tasks == sum(len(times) for times in fires.values())
    return fires


async def test_two_replicas_fire_once_and_survive_the_leader_being_killed(client, schedulers):
    every = 2
    first, second = SchedulerProcess(every).start(), SchedulerProcess(every).start()
    schedulers.extend([first, second])
    leader_id = await eventually(leader)
    assert leader_id in (first.id, second.id)
    await eventually(await run_count_at_least(3))

    schedule = (await client.get("/api/v1/schedule")).json()
    assert schedule["leader"] == leader_id
    watched = next(item for item in schedule["items"] if item["name"] == WATCHED)
    assert watched["last_run"]["scheduler_id"] == leader_id

    # Kill the leader between two rounds; the follower takes the lock and carries on.
    old, new = (first, second) if leader_id == first.id else (second, first)
    before = len(await runs())
    latest = (await eventually(await run_count_at_least(before + 1)))[-1]
    await round_complete(latest.fire_time)
    before = len(await runs())
    old.kill()
    assert await eventually(leader_is(new.id)) == new.id
    await eventually(await run_count_at_least(before + 3))
    new.stop()

    fires = await assert_each_fire_enqueued_once(every)
    by = {row.scheduler_id for row in await runs()}
    assert by == {old.id, new.id}
    assert len(fires[WATCHED]) >= 6


async def test_a_restarted_scheduler_neither_repeats_nor_skips_a_due_fire(schedulers):
    every = 4
    scheduler = SchedulerProcess(every).start()
    schedulers.append(scheduler)
    (f1, *_), *_ = await eventually(await run_count_at_least(1))
    await round_complete(f1)

    # Killed right after a round and back at once: f1 is due again for the new process
    # (inside the grace) but already recorded, so it is not enqueued a second time.
    scheduler.kill()
    again = SchedulerProcess(every).start()
    schedulers.append(again)
    assert await eventually(leader_is(again.id)) == again.id
    second_run = (await eventually(await run_count_at_least(2)))[1]
    assert second_run.fire_time == f1 + dt.timedelta(seconds=every)
    assert second_run.scheduler_id == again.id

    # Killed again, and down while the next fire comes due: caught up once, late.
    await round_complete(second_run.fire_time)
    again.kill()
    missed = second_run.fire_time + dt.timedelta(seconds=every)
    await asyncio.sleep(max(0.0, (missed - dt.datetime.now(dt.UTC)).total_seconds()) + 0.7)
    third = SchedulerProcess(every).start()
    schedulers.append(third)
    third_run = (await eventually(await run_count_at_least(3)))[2]
    assert third_run.fire_time == missed
    assert third_run.scheduler_id == third.id
    assert third_run.created_at > missed + dt.timedelta(seconds=0.5)  # a catch-up, not on time
    await eventually(await run_count_at_least(4))
    third.stop()
    await assert_each_fire_enqueued_once(every)


def scheduler_run(job: str) -> str:
    """`make scheduler-run JOB=job` (the target runs exactly this)."""
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "run", job],
        cwd=support.ROOT,
        env={**os.environ, **support.test_environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = re.search(r"task ([0-9a-f-]{36}) enqueued", done.stdout)
    assert found, done.stdout + done.stderr
    return found.group(1)


async def test_scheduler_run_closes_expired_batches(client, workers):
    now = dt.datetime.now(dt.UTC)
    yesterday, tomorrow = (now - dt.timedelta(days=1)).date(), (now + dt.timedelta(days=1)).date()
    expired, also_expired, running, closed = await create_batches(
        client,
        [
            shift_task_en(1, yesterday.isoformat()),
            shift_task_en(2, yesterday.isoformat()),
            shift_task_en(3, tomorrow.isoformat()),
            shift_task_en(4, yesterday.isoformat(), is_closed=True),
        ],
    )

    task_id = scheduler_run("close_expired_batches")
    task = await wait_for_task(client, task_id)
    assert task["status"] == "SUCCESS", task
    assert task["result"]["batch_ids"] == [expired["id"], also_expired["id"]]

    for batch in (expired, also_expired):
        body = (await client.get(f"/api/v1/batches/{batch['id']}")).json()
        assert body["is_closed"] is True
        assert body["closed_at"] is not None
    assert (await client.get(f"/api/v1/batches/{running['id']}")).json()["is_closed"] is False
    kept = (await client.get(f"/api/v1/batches/{closed['id']}")).json()
    assert kept["closed_at"] == closed["closed_at"]
    events = await query(
        f"SELECT (data->>'batch_id')::int FROM ({outbox_events()}) e "
        "WHERE event = 'batch_closed' ORDER BY 1"
    )
    assert [row[0] for row in events] == [expired["id"], also_expired["id"]]

    schedule = (await client.get("/api/v1/schedule")).json()
    assert schedule["timezone"] == "UTC"
    assert schedule["leader"] is None  # no scheduler process is running
    assert [item["name"] for item in schedule["items"]] == [job.name for job in SCHEDULE]
    item = next(i for i in schedule["items"] if i["name"] == "close_expired_batches")
    assert item["cron"] == "0 1 * * *"
    assert item["queue"] == "fast"
    assert item["last_run"]["task_id"] == task_id
    assert item["last_run"]["status"] == "SUCCESS"
    assert item["last_run"]["scheduler_id"].startswith("manual:")
    next_run = dt.datetime.fromisoformat(item["next_run_at"].replace("Z", "+00:00"))
    assert (next_run.hour, next_run.minute) == (1, 0)
    assert dt.timedelta(0) < next_run - now <= dt.timedelta(days=1)
    never = next(i for i in schedule["items"] if i["name"] == "cleanup_files")
    assert never["last_run"] is None


async def test_scheduler_run_refreshes_statistics(client, workers):
    await create_batches(client, [shift_task_en(5, "2024-06-01")])
    task = await wait_for_task(client, scheduler_run("refresh_statistics"))
    assert task["status"] == "SUCCESS", task
    assert task["result"]["total_batches"] == 1
    assert task["result"]["duration_ms"] >= 0
    dashboard = (await client.get("/api/v1/analytics/dashboard")).json()
    assert dashboard["generated_at"].replace("Z", "+00:00") == task["result"]["generated_at"]
