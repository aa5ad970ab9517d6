"""One fault run: the stack up, the workload with faults injected, settle, check, report."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.outbox import outbox_events
from app.tasks.locks import TASK_LOCK_APPLICATION
from chaos import stack as processes
from chaos.stack import API_PROGRAMS, SCHEDULER_PROGRAMS, WORKER_QUEUES
from chaos.workload import FINAL, Client, Ledger, Workload
from tests import support

# The schedule fires every job every SCHEDULE_EVERY seconds during the run, so that
# scheduler failover and exactly-once fires are exercised within minutes.
SCHEDULE_EVERY = 10
BROKER_DOWN_SECONDS = 5.0
RECEIVER_FLAKY_SECONDS = 8.0
PROBE_CODES = 6_000  # a second aggregation chunk (5,000 per chunk) to hold the task in


@dataclass(frozen=True)
class Options:
    duration: float
    fault_every: float
    settle: float
    seed: int
    clients: int
    run_dir: Path
    faults: tuple[str, ...] = ()
    worker_replicas: int = 2


@dataclass
class Faults:
    injected: Counter[str] = field(default_factory=Counter)
    api_down: list[tuple[float, float]] = field(default_factory=list)  # (killed, healthy)
    worker_recovery_s: list[float] = field(default_factory=list)
    broker_drain_s: list[float] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (unix time, fault)
    notes: list[str] = field(default_factory=list)


def environment() -> dict[str, str]:
    """The stack's own database, vhost and S3, re-created for this run: CHAOS_* names, never
    the test suite's or a developer's."""
    return {
        **support.fresh_environment(
            os.environ.get("CHAOS_DATABASE_NAME", "production_control_chaos"),
            os.environ.get("CHAOS_RABBITMQ_VHOST", "production_control_chaos"),
        ),
        **support.local_s3_environment(),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "TASK_STALE_AFTER": "60",
        "SCHEDULER_TEST_INTERVAL": str(SCHEDULE_EVERY),
        "SCHEDULER_LEADER_RETRY": "0.5",
        "WEBHOOK_RETRY_BASE_SECONDS": "1",
        "WEBHOOK_RETRY_MAX_SECONDS": "10",
    }


FAULTS = (
    "kill_worker",
    "kill_worker_mid_task",
    "kill_api",
    "kill_scheduler_leader",
    "restart_broker",
    "flaky_receiver",
)

EXCLUSIVE_FAULTS = ("kill_worker_mid_task", "restart_broker")


class FaultInjector:
    def __init__(
        self,
        stack: support.Stack,
        workload: Workload,
        receiver: Any,
        database_url: str,
        faults: Faults,
        rng: random.Random,
    ) -> None:
        self.stack = stack
        self.workload = workload
        self.receiver = receiver
        self.database_url = database_url
        self.faults = faults
        self.rng = rng
        self.broker_down = False
        self.exclusive = asyncio.Lock()

    async def run(self, kinds: tuple[str, ...], every: float, until: float) -> None:
        """Inject `kinds` in shuffled rounds, one every `every` seconds. A fault's follow-up
        (waiting for a restart, timing a recovery) does not hold back the next fault, except
        that the two whose figures a concurrent broker outage would distort never overlap."""
        order: list[str] = []
        running: list[asyncio.Task[None]] = []
        await asyncio.sleep(min(every, 3.0))
        while time.monotonic() + 2 < until:
            if not order:
                order = self.rng.sample(kinds, len(kinds))
            running.append(asyncio.create_task(self._inject(order.pop())))
            await asyncio.sleep(every)
        await asyncio.gather(*running)

    async def _inject(self, kind: str) -> None:
        started = time.time()
        try:
            if kind in EXCLUSIVE_FAULTS:
                async with self.exclusive:
                    await getattr(self, kind)()
            else:
                await getattr(self, kind)()
            self.faults.injected[kind] += 1
            self.faults.timeline.append((round(started, 2), kind))
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            self.faults.notes.append(f"{kind} not injected: {exc!r}")

    async def kill_worker(self) -> None:
        queue = self.rng.choice(WORKER_QUEUES)
        if processes.kill_worker_process(self.stack, queue, self.rng.choice) is None:
            raise RuntimeError(f"no worker process of {queue}")

    async def kill_worker_mid_task(self) -> None:
        """SIGKILL the worker process running an aggregation; time until it runs again."""
        client = Client(self.stack.api_urls, self.workload.ledger, self.rng)
        connection = await asyncpg.connect(self.database_url)
        lock: asyncpg.Connection | None = None
        try:
            batch = await self.workload.op_ingest(client, size=1)
            codes = await self.workload.register(client, batch[0], PROBE_CODES) if batch else []
            if not codes:
                raise RuntimeError("no probe batch")
            # Hold a row of the second chunk: the worker waits there, visibly STARTED.
            lock = await asyncpg.connect(self.database_url)
            await lock.execute("BEGIN")
            await lock.execute(
                "SELECT 1 FROM products WHERE unique_code = $1 FOR UPDATE", codes[5_500]
            )
            task_id = await self.workload.op_aggregate_async(client, (batch[0], codes))
            if task_id is None:
                raise RuntimeError("probe task not accepted")
            attempts = await self._wait_for_attempt(connection, task_id, after=0, held=True)
            # The worker process running it: the one whose connection holds the task's lock.
            port = await connection.fetchval(
                "SELECT client_port FROM pg_stat_activity WHERE application_name = $1",
                f"{TASK_LOCK_APPLICATION}{task_id}"[:63],
            )
            owner = processes.owner_of_local_port(port) if port else None
            if owner is None:
                raise RuntimeError(f"no process holds the lock of task {task_id}")
            processes.kill_process_of_stack(self.stack, owner)
            killed = time.monotonic()
            await self._wait_for_attempt(connection, task_id, after=attempts, held=False)
            self.faults.worker_recovery_s.append(round(time.monotonic() - killed, 2))
        finally:
            if lock is not None:
                await lock.close()  # rolls back: the resumed task goes on
            await connection.close()
            await client.close()

    @staticmethod
    async def _wait_for_attempt(
        connection: asyncpg.Connection, task_id: str, *, after: int, held: bool
    ) -> int:
        """The task's attempt number once a worker claimed it past `after` (and, when `held`,
        finished its first chunk so it sits in the second)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = await connection.fetchrow(
                "SELECT status, attempts, progress_current FROM tasks WHERE id = $1",
                uuid.UUID(task_id),
            )
            running = row is not None and row["status"] == "STARTED" and row["attempts"] > after
            if running and (not held or row["progress_current"] >= 5_000):
                return int(row["attempts"])
            await asyncio.sleep(0.02)
        raise RuntimeError(f"task {task_id} was not (re)started in 120 s")

    async def kill_api(self) -> None:
        replica = self.rng.randrange(len(API_PROGRAMS))
        url = self.stack.api_urls[replica]
        processes.kill_program(self.stack, API_PROGRAMS[replica])
        killed = time.time()
        async with httpx.AsyncClient(timeout=1) as http:
            for _ in range(600):
                await asyncio.sleep(0.1)
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/health")).status_code == 200:
                        break
        self.faults.api_down.append((killed, time.time()))

    async def kill_scheduler_leader(self) -> None:
        leader = None
        async with httpx.AsyncClient(timeout=5) as http:
            for url in self.stack.api_urls:  # one may be down (killed a moment ago)
                with contextlib.suppress(httpx.HTTPError):
                    leader = (await http.get(f"{url}/api/v1/schedule")).json().get("leader")
                    break
        if not leader:
            raise RuntimeError("no scheduler leader")
        pid = int(leader.rsplit(":", 1)[1])
        mine = {self.stack.pid(program) for program in SCHEDULER_PROGRAMS}
        if pid not in mine:  # only ever a process of this stack
            raise RuntimeError(f"leader {leader} is not one of this run's schedulers")
        os.kill(pid, signal.SIGKILL)

    async def restart_broker(self) -> None:
        """`rabbitmqctl stop_app` for a few seconds; restored in every case."""
        self.broker_down = True
        try:
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            await asyncio.sleep(BROKER_DOWN_SECONDS)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            self.broker_down = False
        restarted = time.monotonic()
        connection = await asyncpg.connect(self.database_url)
        try:
            # Backlog drained: nothing committed before the restart still waits to be sent.
            while time.monotonic() - restarted < 120:
                waiting = await connection.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL "
                    "AND created_at < now() - interval '1 second'"
                )
                if waiting == 0:
                    self.faults.broker_drain_s.append(round(time.monotonic() - restarted, 2))
                    return
                await asyncio.sleep(0.1)
            self.faults.notes.append("outbox backlog not drained 120 s after the broker restart")
        finally:
            await connection.close()

    async def flaky_receiver(self) -> None:
        self.receiver.fail_every_other_until(time.monotonic() + RECEIVER_FLAKY_SECONDS)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


async def settle(database_url: str, ledger: Ledger, timeout: float) -> tuple[float, dt.datetime]:
    """Wait until every accepted task and every scheduled fire so far is final, the outbox is
    sent and no delivery pends. Returns the time it took and the moment it began (fires after
    it are still coming in while the schedulers run)."""
    started = time.monotonic()
    connection = await asyncpg.connect(database_url)
    try:
        cutoff = await connection.fetchval("SELECT now()")
        ids = [uuid.UUID(task_id) for task_id in ledger.tasks]
        while time.monotonic() - started < timeout:
            open_tasks = await connection.fetchval(
                "SELECT count(*) FROM tasks t WHERE NOT t.status = ANY($2) AND (t.id = ANY($1) "
                "OR t.id IN (SELECT task_id FROM scheduler_runs WHERE fire_time <= $3))",
                ids,
                list(FINAL),
                cutoff,
            )
            backlog = await connection.fetchval(
                "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) + "
                "(SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')"
            )
            if open_tasks == 0 and backlog == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        await connection.close()
    return round(time.monotonic() - started, 1), cutoff


async def check(
    database_url: str, ledger: Ledger, faults: Faults, receiver: Any, cutoff: dt.datetime
) -> dict[str, Any]:
    """Every invariant, with its figures; `violations` lists what broke."""
    violations: list[str] = []
    connection = await asyncpg.connect(database_url)
    try:
        tasks = {
            str(row["id"]): row
            for row in await connection.fetch(
                "SELECT id, kind, status, result, error, attempts FROM tasks"
            )
        }
        not_final = [t for t in ledger.tasks if t not in tasks or tasks[t]["status"] not in FINAL]
        failed = [t for t in ledger.tasks if t in tasks and tasks[t]["status"] != "SUCCESS"]
        violations += [f"task {t} not final: {tasks.get(t)}" for t in not_final]
        violations += [f"task {t} {tasks[t]['status']}: {tasks[t]['error']}" for t in failed]

        # Aggregation: each code asked once, aggregated once, counted once.
        aggregated = {
            row[0]
            for row in await connection.fetch(
                "SELECT unique_code FROM products WHERE is_aggregated"
            )
        }
        asked = set(ledger.aggregated_sync)
        reported = len(ledger.aggregated_sync)
        for task_id, codes in ledger.async_codes.items():
            asked.update(codes)
            result = tasks[task_id]["result"] if task_id in tasks else None
            reported += json.loads(result)["aggregated"] if result else 0
        if aggregated != asked:
            violations.append(
                f"aggregated codes differ: {len(aggregated - asked)} never asked, "
                f"{len(asked - aggregated)} asked but not aggregated"
            )
        if reported != len(aggregated):
            violations.append(
                f"results report {reported} aggregated, database has {len(aggregated)}"
            )

        # Duplicates: what exists is exactly what was acknowledged once.
        imported = sum(
            json.loads(tasks[t]["result"])["created"]
            for t in ledger.import_rows
            if t in tasks and tasks[t]["result"]
        )
        batches = await connection.fetchval("SELECT count(*) FROM batches")
        products = await connection.fetchval("SELECT count(*) FROM products")
        duplicates = {
            "batches": batches - len(ledger.batch_ids) - imported,
            "products": products - len(ledger.codes),
        }
        for kind in set(ledger.tasks.values()):
            in_db = await connection.fetchval(
                "SELECT count(*) FROM tasks WHERE kind = $1 AND params ->> 'fire_time' IS NULL",
                kind,
            )
            duplicates[f"tasks:{kind}"] = in_db - sum(1 for k in ledger.tasks.values() if k == kind)
        duplicates = {name: count for name, count in duplicates.items() if count}
        violations += [f"{count} unacknowledged {name}" for name, count in duplicates.items()]
        violations += [f"replay differs: {m}" for m in ledger.replay_mismatches]
        violations += [f"unexpected answer: {m}" for m in ledger.unexpected]
        for task_id, rows in ledger.import_rows.items():
            result = tasks[task_id]["result"] if task_id in tasks else None
            if result and json.loads(result)["created"] != rows:
                violations.append(f"import {task_id}: {result}")

        # Events: every committed event to every subscription committed before the relay fanned
        # the event out (published_at; a second's margin for the clocks of two processes).
        events = await connection.fetch(
            "SELECT id::text AS id, event AS event_type, "
            f"EXTRACT(EPOCH FROM published_at)::float8 AS fanned_out FROM ({outbox_events()}) e"
        )
        received = {(r.path, r.headers.get("webhook-id")) for r in receiver.requests()}
        expected = {
            (path, event["id"])
            for event in events
            for path, subscribed in ledger.subscribed_at.items()
            if event["fanned_out"] is None or event["fanned_out"] > subscribed + 1.0
        }
        lost_events = expected - received
        if lost_events:
            violations.append(f"{len(lost_events)} events not delivered, e.g. {min(lost_events)}")

        # Scheduled fires: one record per job and slot, no slot skipped, each task final (those
        # due before the settling began; later ones are still running).
        fires = await connection.fetch(
            "SELECT r.job_name, r.fire_time, t.status FROM scheduler_runs r "
            "LEFT JOIN tasks t ON t.id = r.task_id ORDER BY r.job_name, r.fire_time"
        )
        by_job: dict[str, list[dt.datetime]] = {}
        for fire in fires:
            by_job.setdefault(fire["job_name"], []).append(fire["fire_time"])
            if fire["fire_time"] <= cutoff and fire["status"] not in FINAL:
                violations.append(f"fire {fire['job_name']} {fire['fire_time']}: {fire['status']}")
        skipped = 0
        for job, times in by_job.items():
            if len(times) != len(set(times)):
                violations.append(f"{job}: a fire recorded twice")
            slots = (times[-1] - times[0]).total_seconds() / SCHEDULE_EVERY + 1
            skipped += round(slots) - len(times)
        if skipped:
            violations.append(f"{skipped} scheduled fires skipped")

        # 5xx: only while an api replica was down (a killed replica answers nothing at all).
        outside = [
            e
            for e in ledger.server_errors
            if not any(start <= e[0] <= end + 1 for start, end in faults.api_down)
        ]
        violations += [f"{status} from {op} with every api up" for _, op, status in outside]
    finally:
        await connection.close()
    return {
        "operations_sent": sum(ledger.operations.values()),
        "operations": dict(ledger.operations),
        "requests_retried_with_same_key": ledger.retried_requests,
        "replays_sent": ledger.replays,
        "responses_by_status": {str(k): v for k, v in sorted(ledger.statuses.items())},
        "faults_injected": sum(faults.injected.values()),
        "faults": dict(faults.injected),
        "faults_not_injected": faults.notes,
        "fault_timeline": faults.timeline,
        "tasks_accepted": len(ledger.tasks),
        "tasks_lost": len(not_final),
        "tasks_failed": len(failed),
        "codes_aggregated": len(aggregated),
        "events_committed": len(events),
        "deliveries_expected": len(expected),
        "events_lost": len(lost_events),
        "duplicates": sum(duplicates.values()) + len(ledger.replay_mismatches),
        "scheduled_fires": len(fires),
        "scheduled_fires_skipped": skipped,
        "server_errors": len(ledger.server_errors),
        "recovery_after_worker_kill_s": faults.worker_recovery_s,
        "backlog_drained_after_broker_restart_s": faults.broker_drain_s,
        "violations": violations,
    }


async def fault_run(options: Options) -> dict[str, Any]:
    from tests.webhook_receiver import Receiver

    env = await asyncio.to_thread(environment)
    database_url = env["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    rng = random.Random(options.seed)
    receiver = Receiver().start()
    ledger, faults = Ledger(), Faults()
    stack: support.Stack | None = None
    injector: FaultInjector | None = None
    try:
        stack = await asyncio.to_thread(
            processes.start, env, options.run_dir, options.worker_replicas
        )
        workload = Workload(stack.api_urls, ledger, options.seed)
        setup = Client(stack.api_urls, ledger, rng)
        await workload.subscribe(setup, receiver.url("/all"))
        await workload.op_ingest(setup, size=5)
        injector = FaultInjector(stack, workload, receiver, database_url, faults, rng)
        until = time.monotonic() + options.duration
        late = asyncio.create_task(_subscribe_later(workload, setup, receiver, options.duration))
        await asyncio.gather(
            workload.run(options.clients, until),
            injector.run(options.faults, options.fault_every, until),
            late,
        )
        await setup.close()
        settled_in, cutoff = await settle(database_url, ledger, options.settle)
        report = await check(database_url, ledger, faults, receiver, cutoff)
        report["settled_in_s"] = settled_in
    finally:
        if injector is not None and injector.broker_down:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        exit_code: int | str | None = None
        if stack is not None:
            try:
                exit_code = await asyncio.to_thread(stack.stop)
            except subprocess.TimeoutExpired:
                exit_code = "did not stop in time (every process killed)"
        receiver.stop()
    assert stack is not None
    sigkills = processes.sigkills(stack)
    report["supervisor_sigkills"] = len(sigkills)
    report["supervisor_exit_code"] = exit_code
    if sigkills:
        report["violations"].append(f"supervisord SIGKILLed on stop: {sigkills[0]}")
    if exit_code != 0:
        report["violations"].append(f"supervisord stop: exit code {exit_code}")
    report["worker_groups_per_queue"] = options.worker_replicas
    report["seed"] = options.seed
    report["duration_s"] = options.duration
    report["logs"] = str(options.run_dir)
    return report


async def _subscribe_later(
    workload: Workload, client: Client, receiver: Any, duration: float
) -> None:
    """A subscription made mid-run: it must get every event committed after it."""
    await asyncio.sleep(duration / 3)
    await workload.subscribe(client, receiver.url("/late"))


def default_run_dir() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = support.ROOT / ".run" / "chaos" / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path
