"""Every process that relays the outbox turns events into webhook deliveries.

The scheduler runs a relay so jobs are published with no api up. A relay built without the
webhook fan-out once marked events published and created no deliveries: run as `make run`
starts the processes, most events never reached a receiver. These tests run the scheduler
and a webhooks worker group as real processes on a database and vhost of their own, where
no in-process api relay can do the work for them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.outbox import emit_events, outbox_events
from tests import support
from tests.services import truncate
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

EVENT_COUNT = 40


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    return support.isolated_environment("relays")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
async def sessions(environment: dict[str, str]) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(environment["DATABASE_URL"])
    make_session = async_sessionmaker(engine, expire_on_commit=False)
    # The scheduler of `scheduler_and_webhook_workers` may already be enqueueing.
    await truncate(
        make_session.begin,
        "webhook_attempts, webhook_deliveries, webhook_subscriptions, outbox, tasks, "
        "scheduler_runs",
    )
    yield make_session
    await engine.dispose()


async def subscribe_and_emit(
    sessions: async_sessionmaker[AsyncSession], url: str, events: list[str]
) -> None:
    """One subscription to every event kind named, then one committed event per transaction
    (as the api writes them: one request, one event)."""
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO webhook_subscriptions (url, events, secret_key, is_active, "
                "retry_count, timeout) VALUES (:url, :events, 'secret', true, 3, 5)"
            ),
            {"url": url, "events": sorted(set(events))},
        )
    for number, event in enumerate(events):
        async with sessions.begin() as session:
            await emit_events(session, event, [{"id": number}])


async def event_ids(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    """The id of every event in the outbox, as the fan-out names them."""
    async with sessions() as session:
        rows = await session.execute(text(f"SELECT id::text FROM ({outbox_events()}) e"))
        return set(rows.scalars().all())


def mixed_events(count: int) -> list[str]:
    kinds = ["batch_created", "batch_closed", "product_aggregated"]
    return [kinds[n % len(kinds)] for n in range(count)]


async def test_manual_scheduler_run_fans_out_pending_events(
    environment: dict[str, str], sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    """`make scheduler-run` relays what is pending, events included, with nothing else up."""
    await subscribe_and_emit(sessions, receiver.url("/manual"), mixed_events(EVENT_COUNT))
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "scheduler", "run", "reap_stale_tasks"],
        cwd=support.ROOT,
        env={**os.environ, **environment},
        check=True,
        capture_output=True,
        timeout=60,
    )
    async with sessions() as session:
        delivered_events = set(
            (await session.execute(text("SELECT event_id::text FROM webhook_deliveries")))
            .scalars()
            .all()
        )
    assert len(delivered_events) == EVENT_COUNT
    assert delivered_events == await event_ids(sessions)


@pytest.fixture
def scheduler_and_webhook_workers(environment: dict[str, str]) -> Iterator[None]:
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "scheduler"],
        cwd=support.ROOT,
        env={**os.environ, **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    workers = support.WorkerGroup(["webhooks"], extra_env=environment).start()
    yield
    workers.stop()
    scheduler.terminate()
    scheduler.wait(timeout=20)


@pytest.mark.usefixtures("scheduler_and_webhook_workers")
async def test_scheduler_relay_delivers_every_event(
    sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    """No api: the running scheduler's relay and a webhooks worker deliver all N events."""
    await subscribe_and_emit(sessions, receiver.url("/running"), mixed_events(EVENT_COUNT))
    received = await receiver.wait_for(EVENT_COUNT, "/running", timeout=60)
    ids = {request.header("webhook-id") for request in received}
    assert len(ids) == EVENT_COUNT
    assert ids == await event_ids(sessions)
    # The header carries the body's id.
    assert all(request.json["id"] == request.header("webhook-id") for request in received)
