"""Work centers: upserted by identifier during ingest, listed with their batch counts."""

from __future__ import annotations

import pytest

from tests.factories import (
    create_batches,
    parse_time,
    problem,
    shift_task_en,
    shift_task_ru,
    without,
)

WORK_CENTER_KEYS = {
    "id",
    "identifier",
    "name",
    "batch_count",
    "open_batch_count",
    "created_at",
    "updated_at",
}


async def test_upsert_by_identifier_and_counts(client):
    await create_batches(
        client,
        [
            shift_task_en(1, work_center_identifier="WC-1", work_center="Line 1"),
            shift_task_en(2, work_center_identifier="WC-1", work_center="Line 1", is_closed=True),
            shift_task_ru(3, ИдентификаторРЦ="WC-2", РабочийЦентр="Линия 2"),
        ],
    )
    # A later feed renames WC-2 but keeps its id.
    await create_batches(
        client, [shift_task_ru(4, ИдентификаторРЦ="WC-2", РабочийЦентр="Линия 2Б")]
    )

    response = await client.get("/api/v1/work-centers")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "total", "offset", "limit"}
    assert (body["total"], body["offset"], body["limit"]) == (2, 0, 20)
    assert all(set(item) == WORK_CENTER_KEYS for item in body["items"])
    assert [without(item, "created_at", "updated_at") for item in body["items"]] == [
        {"id": 1, "identifier": "WC-1", "name": "Line 1", "batch_count": 2, "open_batch_count": 1},
        {
            "id": 2,
            "identifier": "WC-2",
            "name": "Линия 2Б",
            "batch_count": 2,
            "open_batch_count": 2,
        },
    ]
    one = await client.get("/api/v1/work-centers/2")
    assert one.status_code == 200
    assert one.json() == body["items"][1]


async def test_work_center_without_batches_counts_zero(client):
    [batch] = await create_batches(client, [shift_task_en(1)])
    await client.patch(
        f"/api/v1/batches/{batch['id']}",
        json={"work_center_identifier": "WC-NEW", "work_center_name": "New line"},
    )
    old = (await client.get("/api/v1/work-centers/1")).json()
    assert (old["batch_count"], old["open_batch_count"]) == (0, 0)
    new = (await client.get("/api/v1/work-centers/2")).json()
    assert set(new) == WORK_CENTER_KEYS
    assert (new["identifier"], new["batch_count"]) == ("WC-NEW", 1)


async def test_batches_filter_by_work_center(client):
    await create_batches(
        client, [shift_task_en(1), shift_task_en(2, work_center_identifier="WC-2")]
    )
    listed = (await client.get("/api/v1/batches?work_center_id=2")).json()
    assert [b["batch_number"] for b in listed["items"]] == [2]


async def test_pagination(client):
    await create_batches(
        client, [shift_task_en(n, work_center_identifier=f"WC-{n:02d}") for n in range(1, 6)]
    )
    page = (await client.get("/api/v1/work-centers?offset=3&limit=10")).json()
    assert [w["identifier"] for w in page["items"]] == ["WC-04", "WC-05"]
    assert (page["total"], page["offset"], page["limit"]) == (5, 3, 10)


async def test_missing_work_center_is_404(client):
    body = problem(await client.get("/api/v1/work-centers/5"), 404)
    assert body["detail"] == "Work center not found (id 5)"


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/api/v1/work-centers?limit=1001", ["query", "limit"]),
        ("/api/v1/work-centers?offset=-1", ["query", "offset"]),
        ("/api/v1/work-centers/0", ["path", "work_center_id"]),
    ],
)
async def test_bad_input_is_422(client, path, loc):
    problem(await client.get(path), 422, loc)


async def test_work_centers_carry_created_and_updated_at(client):
    await create_batches(client, [shift_task_ru(1, ИдентификаторРЦ="WC-1", РабочийЦентр="Т1")])
    first = (await client.get("/api/v1/work-centers/1")).json()
    assert first["created_at"] == first["updated_at"]
    await create_batches(client, [shift_task_ru(2, ИдентификаторРЦ="WC-1", РабочийЦентр="Т1Б")])
    renamed = (await client.get("/api/v1/work-centers/1")).json()
    assert renamed["name"] == "Т1Б"
    assert renamed["created_at"] == first["created_at"]
    assert parse_time(renamed["updated_at"]) > parse_time(first["updated_at"])
