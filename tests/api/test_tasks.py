"""Tasks: status/progress, list with filters, cancel, and the SSE progress stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import uuid

import pytest

from tests.factories import count_rows, insert_task, problem, update_task

TASK_KEYS = {
    "task_id",
    "kind",
    "status",
    "progress",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
}


async def test_get_task_shape_and_progress(client):
    task_id = await insert_task(
        "export_batches",
        "STARTED",
        current=250,
        total=1000,
        started_at=dt.datetime.now(dt.UTC),
    )
    response = await client.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= TASK_KEYS
    assert (body["task_id"], body["kind"], body["status"]) == (task_id, "export_batches", "STARTED")
    assert body["progress"] == {"current": 250, "total": 1000, "percent": 25.0}
    assert body["started_at"] is not None
    assert (body["result"], body["error"], body["finished_at"]) == (None, None, None)


async def test_finished_task_carries_result_or_error(client):
    done = await insert_task(
        "import_batches",
        "SUCCESS",
        result={"total": 3, "created": 3},
        finished_at=dt.datetime.now(dt.UTC),
    )
    failed = await insert_task(
        "import_batches",
        "FAILURE",
        error={"type": "TaskFailed", "message": "bad file"},
        finished_at=dt.datetime.now(dt.UTC),
    )
    ok = (await client.get(f"/api/v1/tasks/{done}")).json()
    assert ok["result"] == {"total": 3, "created": 3}
    assert ok["progress"]["percent"] == 100.0  # a finished task with no counted work
    bad = (await client.get(f"/api/v1/tasks/{failed}")).json()
    assert bad["error"] == {"type": "TaskFailed", "message": "bad file"}
    assert bad["finished_at"] is not None


async def test_unknown_task_is_404(client):
    missing = uuid.uuid4()
    body = problem(await client.get(f"/api/v1/tasks/{missing}"), 404)
    assert body["detail"] == f"Task not found (id {missing})"
    cancelled = problem(await client.post(f"/api/v1/tasks/{missing}/cancel"), 404)
    assert cancelled["detail"] == f"Task not found (id {missing})"
    problem(await client.get(f"/api/v1/tasks/{missing}/events"), 404)


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000Z"])
async def test_malformed_task_id_is_422(client, bad):
    problem(await client.get(f"/api/v1/tasks/{bad}"), 422, ["path", "task_id"])
    problem(await client.post(f"/api/v1/tasks/{bad}/cancel"), 422, ["path", "task_id"])
    problem(await client.get(f"/api/v1/tasks/{bad}/events"), 422, ["path", "task_id"])


async def test_list_filters_and_pagination(client):
    ids = [
        await insert_task("generate_report", "PENDING"),
        await insert_task("generate_report", "SUCCESS"),
        await insert_task("export_batches", "SUCCESS"),
        await insert_task("aggregate_products", "FAILURE"),
    ]

    async def listed(**params):
        response = await client.get("/api/v1/tasks", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "total", "offset", "limit"}
        return {item["task_id"] for item in body["items"]}, body["total"]

    assert await listed() == (set(ids), 4)
    assert await listed(status="SUCCESS") == ({ids[1], ids[2]}, 2)
    assert await listed(kind="generate_report") == ({ids[0], ids[1]}, 2)
    assert await listed(kind="generate_report", status="SUCCESS") == ({ids[1]}, 1)
    assert await listed(kind="no_such_kind") == (set(), 0)
    page = (await client.get("/api/v1/tasks", params={"limit": 3, "offset": 2})).json()
    assert (len(page["items"]), page["total"], page["offset"], page["limit"]) == (2, 4, 2, 3)
    assert (await client.get("/api/v1/tasks")).json()["limit"] == 20


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "DONE"}, ["query", "status"]),
        ({"limit": 1001}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
    ],
)
async def test_list_rejects_bad_query(client, params, loc):
    problem(await client.get("/api/v1/tasks", params=params), 422, loc)


async def test_cancel_pending_task_at_once(client):
    task_id = await insert_task("export_batches", "PENDING")
    response = await client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "CANCELLED"
    assert body["finished_at"] is not None
    # A finished task cannot be cancelled again.
    problem(await client.post(f"/api/v1/tasks/{task_id}/cancel"), 409)


async def test_cancel_running_task_is_requested(client):
    task_id = await insert_task("export_batches", "STARTED", current=1, total=10)
    body = (await client.post(f"/api/v1/tasks/{task_id}/cancel")).json()
    # The actor stops at its next progress report; until then it is still running.
    assert body["status"] == "STARTED"
    assert await count_rows("tasks", "cancel_requested") == 1


async def _sse_events(client, task_id: str) -> list[dict]:
    response = await client.get(f"/api/v1/tasks/{task_id}/events")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in re.split(r"\r?\n\r?\n", response.text.strip()):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        assert fields["event"] == "progress"
        events.append(json.loads(fields["data"]))
    return events


async def test_events_of_a_finished_task_end_at_once(client):
    task_id = await insert_task("generate_report", "SUCCESS", result={"file_name": "r.xlsx"})
    events = await _sse_events(client, task_id)
    assert len(events) == 1
    assert events[0]["status"] == "SUCCESS"
    assert events[0]["result"] == {"file_name": "r.xlsx"}


async def test_events_stream_progress_until_the_task_finishes(client):
    task_id = await insert_task("generate_report", "STARTED", current=0, total=4)

    async def work() -> None:
        await asyncio.sleep(0.3)
        await update_task(task_id, progress_current=2)
        await asyncio.sleep(0.7)
        await update_task(
            task_id, status="SUCCESS", progress_current=4, finished_at=dt.datetime.now(dt.UTC)
        )

    # The test client blocks this loop while it runs the app, so the "worker" gets a thread.
    worker = threading.Thread(target=asyncio.run, args=(work(),))
    worker.start()
    try:
        events = await _sse_events(client, task_id)
    finally:
        worker.join()
    assert [e["progress"]["current"] for e in events] == [0, 2, 4]
    assert events[-1]["status"] == "SUCCESS"
    assert events[-1]["progress"]["percent"] == 100.0
