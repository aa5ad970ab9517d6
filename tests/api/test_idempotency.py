"""Idempotency-Key on POSTs: replay, another body, in flight, expiry, scope, bad keys.

Every test counts rows in the real database: a replay must create nothing, a refused
request must leave neither work nor key behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.api_keys import create_key
from app.config import get_settings
from app.db import transaction
from app.middleware import key_ring
from tests.factories import count_rows, create_batch, problem, shift_task_en

KEY_LOC = ["header", "Idempotency-Key"]
EXPORT = {"format": "csv", "filters": {}}


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


async def export(client: Any, key: str, body: dict[str, Any] = EXPORT, **headers: str) -> Any:
    return await client.post("/api/v1/batches/export", json=body, headers=keyed(key, **headers))


async def test_same_key_and_body_replays_the_first_response_and_creates_nothing(client):
    first = await client.post("/api/v1/batches", json=[shift_task_en()], headers=keyed("k-1"))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    events = await count_rows("outbox")

    again = await client.post("/api/v1/batches", json=[shift_task_en()], headers=keyed("k-1"))
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.content == first.content
    assert await count_rows("batches") == 1
    assert await count_rows("outbox") == events  # no second batch_created event
    assert await count_rows("idempotency_keys") == 1


async def test_a_replayed_task_is_the_same_task(client):
    first = await export(client, "export-1")
    again = await export(client, "export-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["task_id"] == first.json()["task_id"]
    assert await count_rows("tasks") == 1
    # Without the header nothing is remembered: each request is new work.
    assert (await client.post("/api/v1/batches/export", json=EXPORT)).status_code == 202
    assert await count_rows("tasks") == 2


async def test_same_key_with_another_request_is_422_and_does_nothing(client):
    assert (await export(client, "k-2")).status_code == 202
    body = problem(await export(client, "k-2", {"format": "excel", "filters": {}}), 422, KEY_LOC)
    assert body["errors"][0]["type"] == "idempotency_key_reused"
    assert "different request" in body["errors"][0]["msg"]
    # Another path with the same body and key is another request too.
    other_path = await client.post("/api/v1/batches", json=[shift_task_en()], headers=keyed("k-2"))
    problem(other_path, 422, KEY_LOC)
    assert await count_rows("tasks") == 1
    assert await count_rows("batches") == 0


@pytest.fixture
async def concurrent(client) -> AsyncIterator[httpx.AsyncClient]:
    """The same app driven from the test's own loop, so requests really overlap (the test
    client runs each request to its end on a portal thread before the test resumes)."""
    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as overlap:
        yield overlap


async def test_repeat_while_the_first_is_in_flight_is_409(client, concurrent):
    batch = await create_batch(client)
    path = f"/api/v1/batches/{batch['id']}/close"
    # Hold the batch row so the first close blocks inside its handler, key lock taken.
    async with transaction() as blocker:
        await blocker.execute(
            text("SELECT id FROM batches WHERE id = :id FOR UPDATE"), {"id": batch["id"]}
        )
        first = asyncio.create_task(concurrent.post(path, headers=keyed("close-1")))
        for _ in range(100):  # until the first request waits on the row lock
            waiting = await count_rows(
                "pg_stat_activity", "datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "the first request never reached its handler"
        body = problem(await concurrent.post(path, headers=keyed("close-1")), 409)
        assert body["detail"].startswith("Request with this Idempotency-Key is still in progress")
        assert await count_rows("idempotency_keys") == 0
    done = await asyncio.wait_for(first, 30)
    assert done.status_code == 200, done.text
    replay = await client.post(path, headers=keyed("close-1"))
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == done.content


async def test_an_expired_key_is_absent(client):
    first = await export(client, "k-3")
    async with transaction() as session:
        await session.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
        )
    # Expired: the request runs again, even with another body, and the key starts over.
    again = await export(client, "k-3", {"format": "excel", "filters": {}})
    assert again.status_code == 202, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["task_id"] != first.json()["task_id"]
    assert await count_rows("tasks") == 2
    assert await count_rows("idempotency_keys", "expires_at > now() + interval '23 hours'") == 1
    replay = await export(client, "k-3", {"format": "excel", "filters": {}})
    assert replay.json() == again.json()


@pytest.fixture
async def two_api_keys() -> AsyncIterator[tuple[str, str]]:
    async with transaction() as session:
        _, first = await create_key(session, "first")
        _, second = await create_key(session, "second")
    key_ring.invalidate()
    yield first, second
    async with transaction() as session:
        await session.execute(text("DELETE FROM api_keys"))
    key_ring.invalidate()


async def test_keys_are_scoped_per_api_key(client, two_api_keys):
    first, second = two_api_keys
    one = await export(client, "shared", **{"X-API-Key": first})
    # The other client's "shared" is its own key: its request runs, even with another body.
    other = await export(
        client, "shared", {"format": "excel", "filters": {}}, **{"X-API-Key": second}
    )
    assert (one.status_code, other.status_code) == (202, 202)
    assert one.json()["task_id"] != other.json()["task_id"]
    replay = await export(client, "shared", **{"X-API-Key": first})
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == one.json()
    assert await count_rows("tasks") == 2
    assert await count_rows("idempotency_keys") == 2


@pytest.mark.parametrize(
    ("key", "error_type"),
    [
        ("", "string_too_short"),
        ("k" * 256, "string_too_long"),
        ("ключ".encode().decode("latin-1"), "value_error"),
    ],
)
async def test_bad_keys_are_422_naming_the_header(client, key, error_type):
    response = await client.post(
        "/api/v1/batches",
        json=[shift_task_en()],
        headers={"Idempotency-Key": key.encode("latin-1")},
    )
    body = problem(response, 422, KEY_LOC)
    assert body["errors"][0]["type"] == error_type
    assert await count_rows("batches") == 0
    assert await count_rows("idempotency_keys") == 0


async def test_the_longest_key_is_accepted(client):
    assert (await export(client, "k" * 255)).status_code == 202
    assert (await export(client, "k" * 255)).headers["idempotent-replayed"] == "true"


async def test_a_rejected_request_stores_no_key_and_runs_again(client):
    product = {"unique_code": "P-1", "batch_id": 1}
    problem(await client.post("/api/v1/products", json=product, headers=keyed("k-4")), 404)
    assert await count_rows("idempotency_keys") == 0
    await create_batch(client)
    # The same key and body once the batch exists: the request runs now (no stored 404).
    created = await client.post("/api/v1/products", json=product, headers=keyed("k-4"))
    assert created.status_code == 201, created.text
    assert await count_rows("products") == 1


@pytest.fixture
async def key_insert_fails() -> AsyncIterator[None]:
    """A fault at the very end of a request: storing the key fails after the work is done."""
    async with transaction() as session:
        await session.execute(
            text(
                "CREATE FUNCTION refuse_key() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
            )
        )
        await session.execute(
            text(
                "CREATE TRIGGER refuse_key BEFORE INSERT ON idempotency_keys "
                "FOR EACH ROW EXECUTE FUNCTION refuse_key()"
            )
        )
    yield
    async with transaction() as session:
        await session.execute(text("DROP TRIGGER refuse_key ON idempotency_keys"))
        await session.execute(text("DROP FUNCTION refuse_key()"))


async def test_work_and_key_commit_together_or_not_at_all(client, key_insert_fails):
    response = await client.post("/api/v1/batches", json=[shift_task_en()], headers=keyed("k-5"))
    problem(response, 500)
    assert await count_rows("batches") == 0  # the handler's insert went with the failed key
    assert await count_rows("outbox") == 0
    assert await count_rows("idempotency_keys") == 0


async def test_a_retried_upload_with_a_new_multipart_boundary_is_replayed(client):
    data = b"batch_number,batch_date\n1,2024-01-30\n"
    sent = []
    for _ in range(2):  # httpx draws a new boundary for every request
        sent.append(
            await client.post(
                "/api/v1/batches/import",
                files={"file": ("shift.csv", data, "text/csv")},
                headers=keyed("upload-1"),
            )
        )
    assert [r.status_code for r in sent] == [202, 202], sent[0].text
    assert sent[1].headers["idempotent-replayed"] == "true"
    assert await count_rows("tasks") == 1
    assert await count_rows("files") == 1


async def test_a_too_large_upload_with_a_key_is_413_and_stores_nothing(client):
    data = b"x" * (get_settings().import_max_bytes + 1)
    response = await client.post(
        "/api/v1/batches/import",
        files={"file": ("big.csv", data, "text/csv")},
        headers=keyed("upload-2"),
    )
    problem(response, 413)
    assert await count_rows("idempotency_keys") == 0
    assert await count_rows("tasks") == 0


IDEMPOTENT_OPERATIONS = {
    ("/api/v1/batches", "post"),
    ("/api/v1/products", "post"),
    ("/api/v1/batches/{batch_id}/close", "post"),
    ("/api/v1/batches/{batch_id}/aggregate", "post"),
    ("/api/v1/batches/{batch_id}/aggregate-async", "post"),
    ("/api/v1/batches/{batch_id}/reports", "post"),
    ("/api/v1/batches/import", "post"),
    ("/api/v1/batches/export", "post"),
    ("/api/v1/webhooks", "post"),
    ("/api/v1/webhooks/{webhook_id}/test", "post"),
    ("/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", "post"),
    ("/api/v1/notifications/test", "post"),
    ("/api/v1/tasks/{task_id}/cancel", "post"),
}


async def test_openapi_documents_the_header_where_it_is_honoured(client):
    spec = (await client.get("/schema/openapi.json")).json()
    documented = set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
            if ("header", "Idempotency-Key") in names:
                documented.add((path, method))
                assert "409" in operation["responses"], (path, method)
    assert documented == IDEMPOTENT_OPERATIONS
