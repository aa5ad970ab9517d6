"""aggregate-async end to end: real worker processes, RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests import support
from tests.conftest import wait_for_task
from tests.factories import add_codes, create_batch

pytestmark = pytest.mark.e2e

CODES = [f"E2E-{i:05d}" for i in range(10_000)]


async def _lock_product(code: str) -> asyncpg.Connection:
    """Hold a row lock on one product so the worker blocks in the chunk that contains it."""
    connection = await asyncpg.connect(support.TEST_DATABASE_URL.replace("+asyncpg", ""))
    await connection.execute("BEGIN")
    await connection.execute("SELECT 1 FROM products WHERE unique_code = $1 FOR UPDATE", code)
    return connection


@asynccontextmanager
async def held_after_first_chunk(
    client: Any, batch_id: int, codes: list[str]
) -> AsyncIterator[str]:
    """Start aggregate-async of `codes`, held by a row lock once the first 5,000 committed.

    Yields the task id while the worker waits in the second chunk; the lock goes on exit.
    """
    lock = await _lock_product(codes[7_000])
    try:
        response = await client.post(
            f"/api/v1/batches/{batch_id}/aggregate-async", json={"unique_codes": codes}
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        await _wait_for(client, task_id, lambda b: b["progress"]["current"] >= 5_000)
        yield task_id
    finally:
        await lock.execute("ROLLBACK")
        await lock.close()


async def _wait_for(client: Any, task_id: str, predicate: Any, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/tasks/{task_id}")).json()
        if predicate(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached: {body}")


async def test_aggregate_10k_codes_with_progress(client, workers):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], CODES)
    other = await create_batch(client, number=4242)
    await add_codes(client, other["id"], ["FOREIGN-1"])
    requested = [*CODES, "MISSING-1", "FOREIGN-1", CODES[0]]

    lock = await _lock_product(CODES[7_000])  # second chunk waits on this row
    try:
        response = await client.post(
            f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": requested}
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "PENDING"
        task_id = accepted["task_id"]

        midway = await _wait_for(client, task_id, lambda b: b["progress"]["current"] >= 5_000)
        assert midway["status"] == "STARTED"
        assert midway["progress"] == {
            "current": 5_000,
            "total": len(requested),
            "percent": round(5_000 * 100 / len(requested), 1),
        }
        assert midway["started_at"] is not None
        assert midway["finished_at"] is None
    finally:
        await lock.execute("ROLLBACK")
        await lock.close()

    done = await wait_for_task(client, task_id)
    assert done["status"] == "SUCCESS", done
    assert done["progress"]["current"] == done["progress"]["total"] == len(requested)
    assert done["progress"]["percent"] == 100.0
    result = done["result"]
    assert result["batch_id"] == batch["id"]
    assert result["total"] == len(requested)
    assert result["aggregated"] == 10_000
    assert result["failed"] == 3
    errors = {e["unique_code"]: e["error"] for e in result["errors"]}
    assert errors["MISSING-1"] == "Product not found: MISSING-1"
    assert (
        errors["FOREIGN-1"]
        == f"Product FOREIGN-1 belongs to batch {other['id']}, not batch {batch['id']}"
    )
    assert errors[CODES[0]].startswith(
        f"Product {CODES[0]} already aggregated: unique code already used at "
    )

    listed = (await client.get(f"/api/v1/batches?batch_number={batch['batch_number']}")).json()
    assert listed["items"][0]["aggregated_count"] == 10_000


async def test_async_aggregation_into_closed_batch_is_refused_up_front(client, workers):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["X-1"])
    assert (await client.post(f"/api/v1/batches/{batch['id']}/close")).status_code == 200
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": ["X-1"]}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == f"Batch {batch['id']} is closed"
    tasks = (await client.get("/api/v1/tasks?kind=aggregate_products")).json()
    assert tasks["total"] == 0


async def test_cancel_running_aggregation(client, workers):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], CODES)
    async with held_after_first_chunk(client, batch["id"], CODES) as task_id:
        cancelled = await client.post(f"/api/v1/tasks/{task_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    done = await wait_for_task(client, task_id)
    assert done["status"] == "CANCELLED"
    # The chunk in flight when the cancel arrived rolls back with it: only whole chunks stay.
    listed = (await client.get(f"/api/v1/batches?batch_number={batch['batch_number']}")).json()
    assert listed["items"][0]["aggregated_count"] == 5_000
