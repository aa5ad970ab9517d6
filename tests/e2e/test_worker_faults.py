"""Faults lose no work: a worker killed with SIGKILL mid-task, and the task still finishes once."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.db import transaction
from tests import support
from tests.conftest import wait_for_task
from tests.e2e.test_aggregation_e2e import CODES, held_after_first_chunk
from tests.factories import add_codes, create_batch

pytestmark = pytest.mark.e2e


async def test_kill_9_worker_mid_task_resumes_from_checkpoint(client):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], CODES)
    doomed = support.WorkerGroup(["heavy"]).start()
    async with held_after_first_chunk(client, batch["id"], CODES) as task_id:
        doomed.kill()  # SIGKILL: no cleanup, the message is unacknowledged

    survivor = support.WorkerGroup(["heavy"]).start()
    try:
        # RabbitMQ redelivers the message; the new worker waits for the dead one's heartbeat
        # to go stale (TASK_STALE_AFTER=6 s in tests), then resumes after the first chunk.
        done = await wait_for_task(client, task_id, timeout=60)
    finally:
        survivor.stop()
    assert done["status"] == "SUCCESS", done
    result = done["result"]
    assert result["aggregated"] == 10_000
    assert result["failed"] == 0, result["errors"][:3]
    async with transaction() as session:
        attempts = (
            await session.execute(
                text("SELECT attempts FROM tasks WHERE id = :id"), {"id": task_id}
            )
        ).scalar_one()
    assert attempts == 2
