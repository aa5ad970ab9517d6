"""Fixtures of the tests that need the services: PostgreSQL (own database), RabbitMQ (own
vhost), the real app and real worker processes.

Registered once for the whole run (tests/conftest.py `pytest_plugins`) and instantiated only
when a test asks: tests/unit asks for none of them and runs with the services stopped. The
folders whose tests need the database (tests/api, tests/workers, tests/e2e) clean it
between tests in their own conftest.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.models import Base
from tests import support

# Every table of the models, so a new model is cleaned without anyone remembering to.
TABLES = ", ".join(table.name for table in Base.metadata.sorted_tables)


@pytest.fixture(scope="session")
def services() -> None:
    """Once per run: a fresh, migrated database and a fresh vhost.

    Prepared in a thread: the migrations run their own event loop, which must not replace
    the one the tests run on.
    """
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            support.prepare_database()
            support.prepare_vhost()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=prepare, name="prepare-services")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
async def client(services: None) -> AsyncIterator[AsyncTestClient[Any]]:
    from app.main import create_app

    async with AsyncTestClient(app=create_app()) as test_client:
        yield test_client


async def truncate(
    begin: Callable[[], AbstractAsyncContextManager[AsyncSession]], tables: str
) -> None:
    """TRUNCATE `tables` in a transaction from `begin`, again on a deadlock: a relay may hold
    row locks on the outbox while it drains, or a scheduler enqueue (tasks, then outbox)."""
    for attempt in range(10):
        try:
            async with begin() as session:
                await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError as exc:
            if "deadlock" not in str(exc) or attempt == 9:
                raise
            await asyncio.sleep(0.05)


@pytest.fixture
async def clean_database(services: None) -> None:
    await truncate(transaction, TABLES)


@pytest.fixture(scope="module")
def workers(services: None) -> Iterator[support.WorkerGroup]:
    """Real worker processes for every queue, one group per test module."""
    group = support.WorkerGroup(["fast", "heavy", "webhooks"]).start()
    yield group
    group.stop()
