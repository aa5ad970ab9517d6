"""`make scheduler-run` without JOB explains itself and fires nothing."""

from __future__ import annotations

import asyncio
import os

from tests.factories import count_rows, create_batch
from tests.support import ROOT


async def test_scheduler_run_without_job_prints_usage_and_changes_nothing(client):
    batch = await create_batch(client)  # its shift ended in 2024: close_expired_batches prey
    process = await asyncio.create_subprocess_exec(
        "make",
        "--no-print-directory",
        "scheduler-run",
        cwd=ROOT,
        env={**os.environ, "JOB": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert process.returncode != 0, output
    assert "usage: make scheduler-run JOB=<job>" in output
    for job in ("close_expired_batches", "cleanup_files", "refresh_statistics"):
        assert job in output
    assert await count_rows("tasks") == 0
    assert await count_rows("batches", f"id = {batch['id']} AND NOT is_closed") == 1
