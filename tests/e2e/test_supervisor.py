"""`make run`'s supervisor: a dead process is restarted, not contagious; stops are clean.

The stack runs exactly as `make run` starts it (python -m ops.supervise: supervisord with
ops/supervisord.conf), against the test database, vhost and S3 endpoint.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests import support
from tests.conftest import wait_for_task
from tests.factories import add_codes, count_rows, create_batch

pytestmark = pytest.mark.e2e

CODES_PER_BATCH = 2_000


@pytest.fixture(scope="module")
def stack() -> Iterator[support.Stack]:
    running = support.Stack().start()
    yield running
    running.cleanup()


@pytest.fixture
async def api(stack: support.Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        yield client


async def aggregate_all(api: httpx.AsyncClient, number: int) -> str:
    """A new batch with its codes, and aggregate-async of them started; returns the task id."""
    batch = await create_batch(api, number=number)
    codes = [f"SUP-{number}-{i:05d}" for i in range(CODES_PER_BATCH)]
    await add_codes(api, batch["id"], codes)
    response = await api.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": codes}
    )
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def assert_clean_stop(log: str) -> None:
    # supervisord's words when stopwaitsecs runs out ("killing 'heavy' (123) with SIGKILL")
    # or when it finds a program killed; dramatiq's when a worker process gets a second
    # stop signal and abandons its messages.
    for symptom in ("SIGKILL", "Killing worker process"):
        assert symptom not in log, log[-6000:]
    for program in ("api", "scheduler", "fast", "heavy", "webhooks"):
        assert f"stopped: {program} (exit status 0)" in log, log[-6000:]


async def test_killed_worker_process_restarts_its_program_only(
    stack: support.Stack, api: httpx.AsyncClient
) -> None:
    before = {program: stack.pid(program) for program in stack.PROGRAMS}
    heavy = before["workers:heavy"]
    worker_processes = support.child_pids(heavy)
    assert worker_processes, "dramatiq's master has no worker process"

    # dramatiq's master shuts its whole group down when one worker process dies ...
    os.kill(worker_processes[0], signal.SIGKILL)
    restarted = stack.wait_restarted("workers:heavy", old_pid=heavy)

    # ... and the supervisor restarts that program alone.
    assert "exited: heavy (exit status 1; not expected)" in stack.log()
    after = {program: stack.pid(program) for program in stack.PROGRAMS}
    assert after == {**before, "workers:heavy": restarted}
    assert stack.healthy()

    done = await wait_for_task(api, await aggregate_all(api, number=1), timeout=30)
    assert done["status"] == "SUCCESS", done
    assert done["result"]["aggregated"] == CODES_PER_BATCH


async def test_killed_worker_master_takes_its_worker_processes_along(
    stack: support.Stack, api: httpx.AsyncClient
) -> None:
    master = stack.pid("workers:fast")
    orphans = support.child_pids(master)
    assert orphans
    os.kill(master, signal.SIGKILL)
    stack.wait_restarted("workers:fast", old_pid=master)
    # The kernel SIGTERMs them (PR_SET_PDEATHSIG): they stop instead of consuming on beside
    # the new master's.
    support.wait_until(lambda: not any(support.is_alive(pid) for pid in orphans), timeout=30)
    assert support.child_pids(stack.pid("workers:fast"))


async def test_killed_api_is_restarted(stack: support.Stack, api: httpx.AsyncClient) -> None:
    scheduler = stack.pid("scheduler")
    old_api = stack.pid("api")
    os.kill(old_api, signal.SIGKILL)
    stack.wait_restarted("api", old_pid=old_api)
    stack.wait_healthy()
    assert (await api.get("/health")).status_code == 200
    assert stack.pid("scheduler") == scheduler


@pytest.mark.parametrize(
    ("signum", "whole_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-to-supervisord", "ctrl-c-to-its-process-group"],
)
async def test_clean_stop(signum: int, whole_group: bool) -> None:
    stopping = support.Stack().start()
    try:
        programs = [stopping.pid(program) for program in stopping.PROGRAMS]
        async with httpx.AsyncClient(base_url=stopping.base_url, timeout=10) as api:
            finished = await aggregate_all(api, number=2)
            await wait_for_task(api, finished)
            in_flight = await aggregate_all(api, number=3)

        assert stopping.stop(signum, whole_group=whole_group, timeout=60) == 0
        log = stopping.log()
        assert_clean_stop(log)
        for pid in programs:
            assert not support.is_alive(pid), f"{pid} outlived supervisord"
        # The task stopped mid-way finished, or went back to the queue: never STARTED.
        assert await count_rows("tasks", "status = 'STARTED'") == 0, in_flight
    finally:
        stopping.cleanup()
