"""A webhooks worker closes its pooled HTTP sessions when it stops: a real worker process.

A module of its own: a worker group of another module's `workers` fixture would take the
deliveries from this one's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import support
from tests.e2e.test_webhooks import WEBHOOKS, subscribe, wait_until_settled
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


async def test_a_stopped_worker_closes_its_webhook_sessions(client, tmp_path: Path):
    """The close is seen in the worker's log, on its loop before the loop stops. An unclosed
    session would not show here as a warning: dramatiq's forked processes end with os._exit,
    before any garbage collection; the check for one is for a worker that ends otherwise."""
    output = tmp_path / "worker.log"
    receiver = Receiver().start()
    # INFO: the line that reports the close.
    group = support.WorkerGroup(["webhooks"], {"LOG_LEVEL": "INFO"}, output).start()
    try:
        hook = await subscribe(client, receiver.url("/ping"))
        response = await client.post(f"{WEBHOOKS}/{hook['id']}/test")
        assert response.status_code == 202
        [delivery] = await wait_until_settled(client, hook["id"], 1)
        assert delivery["status"] == "success"
    finally:
        group.stop()  # SIGTERM: dramatiq's orderly shutdown
        receiver.stop()
    assert group.process is not None
    assert group.process.returncode == 0
    log = output.read_text(errors="replace")
    assert "webhook client sessions closed" in log
    assert "Unclosed" not in log
