"""Shared fixtures: real PostgreSQL (own database), real RabbitMQ (own vhost), the real app."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests import support

os.environ.update(support.test_environment())

# S3 before the app reads its settings; the buckets are created by app start-up.
os.environ.update(support.local_s3_environment())


def pytest_configure(config: pytest.Config) -> None:
    # xdist-free and once per run: a fresh schema and a fresh vhost.
    support.prepare_database()
    support.prepare_vhost()


from litestar.testing import AsyncTestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from app.db import transaction  # noqa: E402
from app.main import create_app  # noqa: E402

TABLES = (
    "webhook_attempts, webhook_deliveries, webhook_subscriptions, products, batches, "
    "work_centers, tasks, outbox, files, statistics_snapshots, scheduler_runs, api_keys, "
    "idempotency_keys"
)


@pytest.fixture(scope="session")
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
async def clean_database() -> None:
    # The relay may hold row locks on the outbox while it drains the previous test's events;
    # TRUNCATE then deadlocks with it now and then: try again.
    for attempt in range(10):
        try:
            async with transaction() as session:
                await session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError as exc:
            if "deadlock" not in str(exc) or attempt == 9:
                raise
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def workers() -> Iterator[support.WorkerGroup]:
    """Real worker processes for every queue, one group per test module."""
    group = support.WorkerGroup(["fast", "heavy", "webhooks"]).start()
    yield group
    group.stop()


async def wait_for_task(
    client: AsyncTestClient[Any], task_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll GET /tasks/{id} until the task finishes; returns its last state."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish in {timeout}s: {body}")
