"""Aggregation: the single and list forms with the exact error rules, and the async form."""

from __future__ import annotations

import re

import pytest

from tests.factories import (
    add_codes,
    aggregate,
    count_rows,
    create_batch,
    event_types,
    parse_time,
    problem,
)

UTC_SECONDS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
async def batch(client):
    batch = await create_batch(client, number=7)
    await add_codes(client, batch["id"], ["C1", "C2", "C3"])
    return batch


async def test_single_code_returns_the_aggregated_product(client, batch):
    body = await aggregate(client, batch["id"], "C2")
    assert set(body) == {
        "id",
        "unique_code",
        "batch_id",
        "is_aggregated",
        "aggregated_at",
        "created_at",
    }
    assert (body["unique_code"], body["batch_id"], body["is_aggregated"]) == (
        "C2",
        batch["id"],
        True,
    )
    assert parse_time(body["aggregated_at"]) >= parse_time(body["created_at"])
    listed = (await client.get("/api/v1/products?is_aggregated=true")).json()
    assert [p["unique_code"] for p in listed["items"]] == ["C2"]
    assert (await event_types())[-1] == "product_aggregated"


async def test_unknown_code_is_404(client, batch):
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate", json={"unique_code": "NOPE"}
    )
    assert problem(response, 404)["detail"] == "Product not found: NOPE"


async def test_already_aggregated_is_400_with_the_time(client, batch):
    first = await aggregate(client, batch["id"], "C1")
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate", json={"unique_code": "C1"}
    )
    detail = problem(response, 400)["detail"]
    match = re.fullmatch(
        rf"Product C1 already aggregated: unique code already used at ({UTC_SECONDS})", detail
    )
    assert match, detail
    assert (
        abs((parse_time(match.group(1)) - parse_time(first["aggregated_at"])).total_seconds()) < 1
    )
    assert await event_types() == ["batch_created", "product_aggregated"]


async def test_code_of_another_batch_is_400(client, batch):
    other = await create_batch(client, number=8)
    await add_codes(client, other["id"], ["FOREIGN"])
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate", json={"unique_code": "FOREIGN"}
    )
    detail = problem(response, 400)["detail"]
    assert detail == f"Product FOREIGN belongs to batch {other['id']}, not batch {batch['id']}"
    assert await count_rows("products", "is_aggregated") == 0


async def test_closed_batch_is_400(client, batch):
    await client.post(f"/api/v1/batches/{batch['id']}/close")
    for payload in ({"unique_code": "C1"}, {"unique_codes": ["C1", "C2"]}):
        response = await client.post(f"/api/v1/batches/{batch['id']}/aggregate", json=payload)
        assert problem(response, 400)["detail"] == f"Batch {batch['id']} is closed"
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": ["C1"]}
    )
    assert problem(response, 400)["detail"] == f"Batch {batch['id']} is closed"
    assert await count_rows("products", "is_aggregated") == 0
    assert await count_rows("tasks") == 0


async def test_unknown_batch_is_404(client):
    for path, payload in (
        ("aggregate", {"unique_code": "C1"}),
        ("aggregate", {"unique_codes": ["C1"]}),
        ("aggregate-async", {"unique_codes": ["C1"]}),
    ):
        response = await client.post(f"/api/v1/batches/99/{path}", json=payload)
        assert problem(response, 404)["detail"] == "Batch not found (id 99)"


async def test_list_form_returns_a_summary(client, batch):
    other = await create_batch(client, number=8)
    await add_codes(client, other["id"], ["FOREIGN"])
    await aggregate(client, batch["id"], "C3")
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate",
        json={"unique_codes": ["C1", "NOPE", "C2", "FOREIGN", "C3", "C1"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"batch_id", "total", "aggregated", "failed", "errors"}
    assert (body["batch_id"], body["total"], body["aggregated"], body["failed"]) == (
        batch["id"],
        6,
        2,
        4,
    )
    errors = {(e["unique_code"], e["error"].split(":")[0]) for e in body["errors"]}
    assert errors == {
        ("NOPE", "Product not found"),
        ("FOREIGN", f"Product FOREIGN belongs to batch {other['id']}, not batch {batch['id']}"),
        ("C3", "Product C3 already aggregated"),
        ("C1", "Product C1 already aggregated"),
    }
    assert all(set(e) == {"unique_code", "error"} for e in body["errors"])
    assert await count_rows("products", "is_aggregated") == 3


async def test_list_form_with_nothing_to_do_still_answers_200(client, batch):
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate", json={"unique_codes": ["NOPE"]}
    )
    assert response.status_code == 200
    assert response.json()["failed"] == 1
    assert "product_aggregated" not in await event_types()


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({}, ["body", "unique_code"]),
        ({"unique_code": "C1", "unique_codes": ["C2"]}, ["body", "unique_code"]),
        ({"unique_code": ""}, ["body", "unique_code"]),
        ({"unique_code": "   "}, ["body", "unique_code"]),
        ({"unique_code": 5}, ["body", "unique_code"]),
        ({"unique_codes": []}, ["body", "unique_codes"]),
        ({"unique_codes": ["C1", " "]}, ["body", "unique_codes", 1]),
        ({"unique_codes": ["C1", ""]}, ["body", "unique_codes", 1]),
        ({"unique_codes": ["C1", "C\x002"]}, ["body", "unique_codes", 1]),
        ({"unique_codes": [f"C{i}" for i in range(101)]}, ["body", "unique_codes"]),
        ({"unique_codes": "C1"}, ["body", "unique_codes"]),
        ({"code": "C1"}, ["body", "code"]),
        ([], ["body"]),
        (None, ["body"]),
    ],
)
async def test_bad_aggregate_input_is_422(client, batch, payload, loc):
    response = await client.post(f"/api/v1/batches/{batch['id']}/aggregate", json=payload)
    problem(response, 422, loc)
    assert await count_rows("products", "is_aggregated") == 0


async def test_exactly_100_codes_is_accepted_synchronously(client, batch):
    codes = [f"H{i}" for i in range(100)]
    await add_codes(client, batch["id"], codes)
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate", json={"unique_codes": codes}
    )
    assert response.status_code == 200
    assert response.json()["aggregated"] == 100


# -- async form (the worker-run path is covered by tests/e2e) -------------------------------


async def test_async_accepts_and_creates_a_pending_task(client, batch):
    codes = ["C1", "C2", "C3", "NOPE"]
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": codes}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert set(accepted) == {"task_id", "status"}
    assert accepted["status"] == "PENDING"

    task = (await client.get(f"/api/v1/tasks/{accepted['task_id']}")).json()
    assert task["task_id"] == accepted["task_id"]
    assert task["kind"] == "aggregate_products"
    assert task["status"] == "PENDING"
    assert task["progress"] == {"current": 0, "total": 4, "percent": 0.0}
    assert (task["result"], task["error"], task["started_at"], task["finished_at"]) == (None,) * 4
    # Nothing is aggregated inline: the work is the actor's.
    assert await count_rows("products", "is_aggregated") == 0
    assert await count_rows("outbox", "topic = 'task'") == 1


async def test_async_takes_more_than_100_codes(client, batch):
    codes = [f"X{i}" for i in range(5_000)]
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": codes}
    )
    assert response.status_code == 202, response.text
    task = (await client.get(f"/api/v1/tasks/{response.json()['task_id']}")).json()
    assert task["progress"]["total"] == 5_000


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({}, ["body", "unique_codes"]),
        ({"unique_codes": []}, ["body", "unique_codes"]),
        ({"unique_codes": ["C1", "  "]}, ["body", "unique_codes", 1]),
        ({"unique_codes": [""]}, ["body", "unique_codes", 0]),
        ({"unique_code": "C1"}, ["body", "unique_code"]),
        ({"unique_codes": [1]}, ["body", "unique_codes", 0]),
    ],
)
async def test_async_rejects_bad_input_before_anything_else(client, payload, loc):
    # 422 comes first, even for a batch that does not exist.
    response = await client.post("/api/v1/batches/99/aggregate-async", json=payload)
    problem(response, 422, loc)
    assert await count_rows("tasks") == 0
    assert await count_rows("outbox") == 0


async def test_products_path_aggregates_with_success_flag(client, batch):
    url = f"/api/v1/products/batches/{batch['id']}/aggregate"
    response = await client.post(url, json={"unique_codes": ["C1", "C2"]})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "batch_id": batch["id"],
        "total": 2,
        "aggregated": 2,
        "failed": 0,
        "errors": [],
        "success": True,
    }
    response = await client.post(url, json={"unique_codes": ["C3", "C1", "NOPE"]})
    body = response.json()
    assert (body["aggregated"], body["failed"], body["success"]) == (1, 2, False)
    assert await count_rows("products", "is_aggregated") == 3
    problem(await client.post(url, json={"unique_code": "C3"}), 422, ["body", "unique_code"])
    problem(await client.post(url, json={"unique_codes": []}), 422, ["body", "unique_codes"])
    problem(
        await client.post("/api/v1/products/batches/99/aggregate", json={"unique_codes": ["C1"]}),
        404,
    )
    await client.post(f"/api/v1/batches/{batch['id']}/close")
    closed = await client.post(url, json={"unique_codes": ["C2"]})
    assert problem(closed, 400)["detail"] == f"Batch {batch['id']} is closed"


async def test_alternative_paths_are_documented(client):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert "post" in paths["/api/v1/products/batches/{batch_id}/aggregate"]
    assert "get" in paths["/api/v1/products/by-batch/{batch_id}"]
