"""`make queues` reports what waits in RabbitMQ (no worker consumes in this module)."""

from __future__ import annotations

import asyncio
import time

from app.outbox import Publisher, actor_message
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


async def _webhook_depths() -> tuple[int, int]:
    depths = {name: ready for name, ready, _ in await asyncio.to_thread(queue_depths)}
    return depths["webhooks"], depths["webhooks.DQ"]


async def test_a_message_with_an_eta_waits_in_the_delay_queue():
    """A planned webhook retry is published at once but held by the broker until its eta."""
    ready, delayed = await _webhook_depths()
    publisher = Publisher()
    # Ids no test creates: whoever consumes them later finds nothing to send.
    later = int(time.time() * 1000) + 60_000
    try:
        await publisher.publish(
            [
                actor_message("deliver_webhook", [2_000_000_001], eta_ms=later),
                actor_message("deliver_webhook", [2_000_000_002]),
            ]
        )
    finally:
        publisher.close()
    for _ in range(100):
        if await _webhook_depths() == (ready + 1, delayed + 1):
            break
        await asyncio.sleep(0.05)
    assert await _webhook_depths() == (ready + 1, delayed + 1)
