"""The broker restarting loses no work: jobs accepted while RabbitMQ is down run once it is back."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests import support
from tests.conftest import wait_for_task
from tests.factories import add_codes, create_batch

pytestmark = pytest.mark.e2e


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def _wait_for_broker(timeout: float = 60.0) -> None:
    import pika

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pika.BlockingConnection(pika.URLParameters(support.TEST_RABBITMQ_URL)).close()
            return
        except pika.exceptions.AMQPError:
            time.sleep(0.5)
    raise AssertionError("RabbitMQ did not come back")


async def test_jobs_accepted_during_broker_outage_run_after_restart(client, workers):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["OUTAGE-1", "OUTAGE-2"])
    _rabbitmqctl("stop_app")
    try:
        response = await client.post(
            f"/api/v1/batches/{batch['id']}/aggregate-async",
            json={"unique_codes": ["OUTAGE-1", "OUTAGE-2"]},
        )
        # The api never talks to the broker on the request path: the job waits in the outbox.
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"].startswith("error")
    finally:
        _rabbitmqctl("start_app")
        _wait_for_broker()

    done = await wait_for_task(client, task_id, timeout=90)
    assert done["status"] == "SUCCESS", done
    assert done["result"]["aggregated"] == 2
