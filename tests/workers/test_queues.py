"""`make queues` reports what waits in RabbitMQ (no worker consumes in this module)."""

from __future__ import annotations

import asyncio

from app.queues import queue_depths
from tests.factories import add_codes, create_batch


async def _heavy_ready() -> int:
    depths = await asyncio.to_thread(queue_depths)
    return next(ready for name, ready, _ in depths if name == "heavy")


async def test_queue_depths_show_a_waiting_job(client):
    before = await _heavy_ready()
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["Q-1"])
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": ["Q-1"]}
    )
    assert response.status_code == 202
    for _ in range(100):  # the relay publishes right after the commit
        if await _heavy_ready() == before + 1:
            break
        await asyncio.sleep(0.05)
    assert await _heavy_ready() == before + 1
    names = [name for name, _, _ in await asyncio.to_thread(queue_depths)]
    assert names == [f"{q}{s}" for q in ("fast", "heavy", "webhooks") for s in ("", ".DQ", ".XQ")]
