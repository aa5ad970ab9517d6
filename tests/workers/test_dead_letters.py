"""A task whose actor fails unexpectedly lands in the dead-letter queue and can be replayed."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from app.db import transaction
from app.outbox import enqueue_task
from tests.conftest import wait_for_task
from tests.factories import add_codes, create_batch
from workers import dead_letters


async def _dead_letter_count(expected: int, timeout: float = 20.0) -> int:
    for _ in range(int(timeout / 0.25)):
        count = await asyncio.to_thread(dead_letters.list_dead_letters)
        if count == expected:
            return count
        await asyncio.sleep(0.25)
    return count


async def test_failed_message_is_dead_lettered_then_requeued(client, workers):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["DLQ-1"])
    async with transaction() as session:  # params the actor cannot handle: a programming error
        task = await enqueue_task(session, "aggregate_products", {"batch_id": batch["id"]})
    failed = await wait_for_task(client, str(task.id))
    assert failed["status"] == "FAILURE"
    assert failed["error"]["type"] == "KeyError"
    assert await _dead_letter_count(1) == 1

    async with transaction() as session:  # the operator fixes the cause, then replays
        await session.execute(
            text("UPDATE tasks SET params = :p WHERE id = :id"),
            {"p": json.dumps({"batch_id": batch["id"], "unique_codes": ["DLQ-1"]}), "id": task.id},
        )
    assert await asyncio.to_thread(dead_letters.requeue_dead_letters) == 1
    done = await wait_for_task(client, str(task.id))
    assert done["status"] == "SUCCESS", done
    assert done["result"]["aggregated"] == 1
    assert await _dead_letter_count(0) == 0
