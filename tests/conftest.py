"""The test environment (own database and vhost names, a local S3) and shared helpers.

The fixtures that need the services are tests/services.py's; tests/unit uses none of them.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tests import support

os.environ.update(support.test_environment())

# S3 before the app reads its settings; the buckets are created by app start-up.
os.environ.update(support.local_s3_environment())


# The fixtures that need PostgreSQL and RabbitMQ; none runs unless a test asks for it.
pytest_plugins = ["tests.services"]

from litestar.testing import AsyncTestClient  # noqa: E402


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
