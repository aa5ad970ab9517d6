"""Batches (1C shift tasks): ingest, overwrite rule, list filters, get, patch, close."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import asyncpg
import pytest

from tests.factories import (
    add_codes,
    aggregate,
    count_rows,
    create_batch,
    create_batches,
    event_types,
    parse_time,
    problem,
    shift_task_en,
    shift_task_ru,
)
from tests.support import TEST_DATABASE_URL

# The batch object of the API (README, "API summary"), key for key.
BATCH_KEYS = {
    "id",
    "is_closed",
    "closed_at",
    "task_description",
    "work_center",
    "shift",
    "team",
    "batch_number",
    "batch_date",
    "nomenclature",
    "ekn_code",
    "shift_start",
    "shift_end",
    "products",
    "created_at",
    "updated_at",
}
LIST_ITEM_KEYS = (BATCH_KEYS - {"products"}) | {"product_count", "aggregated_count"}
UTC = dt.UTC


async def test_russian_feed_round_trips_exactly(client):
    response = await client.post("/api/v1/batches", json=[shift_task_ru()])
    assert response.status_code == 201, response.text
    [batch] = response.json()
    assert set(batch) == BATCH_KEYS
    assert batch["is_closed"] is False
    assert batch["closed_at"] is None
    assert batch["task_description"] == "Задание на смену 2345"
    assert batch["work_center"] == {"id": 1, "identifier": "A", "name": "Т2"}
    assert batch["shift"] == "1"
    assert batch["team"] == "Бригада №4"
    assert batch["batch_number"] == 22222
    assert batch["batch_date"] == "2024-01-30"
    assert batch["nomenclature"] == "Какая то номенклатура"
    assert batch["ekn_code"] == "456678"
    # 20:00 and 23:00 at +05:00 are 15:00 and 18:00 UTC.
    assert parse_time(batch["shift_start"]) == dt.datetime(2024, 1, 30, 15, tzinfo=UTC)
    assert parse_time(batch["shift_end"]) == dt.datetime(2024, 1, 30, 18, tzinfo=UTC)
    assert batch["products"] == []
    assert parse_time(batch["created_at"]).tzinfo is not None

    fetched = await client.get(f"/api/v1/batches/{batch['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == batch


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2024-02-01T08:00:00", dt.datetime(2024, 2, 1, 8, tzinfo=UTC)),  # naive = TZ (UTC)
        ("2024-02-01T08:00:00Z", dt.datetime(2024, 2, 1, 8, tzinfo=UTC)),
        ("2024-02-01T11:00:00+03:00", dt.datetime(2024, 2, 1, 8, tzinfo=UTC)),
        ("2024-02-01T08:00:00.250-01:30", dt.datetime(2024, 2, 1, 9, 30, 0, 250000, tzinfo=UTC)),
    ],
)
async def test_datetimes_naive_z_and_offset(client, sent, expected):
    batch = await create_batch(client, shift_start=sent, shift_end="2024-02-01T23:00:00Z")
    assert parse_time(batch["shift_start"]) == expected


async def test_feed_of_many_keeps_input_order_and_upserts_work_centers(client):
    payloads = [
        shift_task_en(3, work_center_identifier="WC-2", work_center="Line 2"),
        shift_task_en(1),
        shift_task_ru(2, ИдентификаторРЦ="WC-2", РабочийЦентр="Line 2 renamed"),
    ]
    batches = await create_batches(client, payloads)
    assert [b["batch_number"] for b in batches] == [3, 1, 2]
    assert batches[0]["work_center"]["id"] == batches[2]["work_center"]["id"]
    # The last name sent for an identifier wins.
    centers = (await client.get("/api/v1/work-centers")).json()
    assert {c["identifier"]: c["name"] for c in centers["items"]} == {
        "WC-1": "Line 1",
        "WC-2": "Line 2 renamed",
    }
    assert await event_types() == ["batch_created"] * 3


async def test_work_center_name_alias(client):
    payload = shift_task_en(work_center_name="Line 5", work_center_identifier="WC-5")
    del payload["work_center"]
    [batch] = await create_batches(client, [payload])
    assert batch["work_center"] == {"id": 1, "identifier": "WC-5", "name": "Line 5"}


async def test_closed_in_feed_sets_closed_at(client):
    [batch] = await create_batches(client, [shift_task_ru(СтатусЗакрытия=True)])
    assert batch["is_closed"] is True
    assert parse_time(batch["closed_at"]) <= dt.datetime.now(UTC)


async def test_duplicate_in_database_is_409_and_nothing_written(client):
    await create_batch(client, number=7)
    response = await client.post(
        "/api/v1/batches",
        json=[
            shift_task_en(8, work_center_identifier="NEW"),
            shift_task_en(7),
        ],
    )
    body = problem(response, 409, ["body", 1, "batch_number"])
    assert body["detail"].startswith("Batch 7 of 2024-02-01 already exists")
    listed = (await client.get("/api/v1/batches")).json()
    assert [b["batch_number"] for b in listed["items"]] == [7]
    assert await count_rows("work_centers", "identifier = 'NEW'") == 0
    assert await event_types() == ["batch_created"]


async def test_duplicate_twice_in_one_array_is_409_and_nothing_written(client):
    response = await client.post(
        "/api/v1/batches", json=[shift_task_ru(5), shift_task_en(6), shift_task_ru(5)]
    )
    body = problem(response, 409, ["body", 2, "НомерПартии"])
    assert "twice" in body["detail"]
    assert await count_rows("batches") == 0
    assert await count_rows("outbox") == 0


async def test_same_number_on_another_date_is_not_a_duplicate(client):
    batches = await create_batches(
        client, [shift_task_en(5, "2024-03-01"), shift_task_en(5, "2024-03-02")]
    )
    assert len({b["id"] for b in batches}) == 2


async def test_on_conflict_update_overwrites_existing(client):
    original = await create_batch(client, number=7)
    response = await client.post(
        "/api/v1/batches?on_conflict=update",
        json=[shift_task_en(7, team="Team B", is_closed=True)],
    )
    assert response.status_code == 200, response.text
    [updated] = response.json()
    assert updated["id"] == original["id"]
    assert updated["team"] == "Team B"
    assert updated["is_closed"] is True
    assert updated["closed_at"] is not None
    assert parse_time(updated["updated_at"]) >= parse_time(original["updated_at"])
    assert await event_types() == ["batch_created", "batch_updated", "batch_closed"]

    mixed = await client.post(
        "/api/v1/batches?on_conflict=update", json=[shift_task_en(7), shift_task_en(8)]
    )
    assert mixed.status_code == 201, mixed.text
    assert [b["batch_number"] for b in mixed.json()] == [7, 8]
    assert mixed.json()[0]["is_closed"] is False
    assert mixed.json()[0]["closed_at"] is None
    assert await count_rows("batches") == 2


async def test_on_conflict_update_still_rejects_duplicates_inside_the_array(client):
    response = await client.post(
        "/api/v1/batches?on_conflict=update", json=[shift_task_en(7), shift_task_en(7)]
    )
    problem(response, 409)
    assert await count_rows("batches") == 0


async def test_on_conflict_rejects_unknown_value(client):
    response = await client.post("/api/v1/batches?on_conflict=ignore", json=[shift_task_en()])
    problem(response, 422, ["query", "on_conflict"])
    assert await count_rows("batches") == 0


async def test_get_batch_nests_work_center_and_products(client):
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["P-1", "P-2"])
    await aggregate(client, batch["id"], "P-2")
    body = (await client.get(f"/api/v1/batches/{batch['id']}")).json()
    assert set(body) == BATCH_KEYS
    assert body["work_center"] == {"id": 1, "identifier": "WC-1", "name": "Line 1"}
    assert [set(p) for p in body["products"]] == [
        {"id", "unique_code", "is_aggregated", "aggregated_at"}
    ] * 2
    assert [(p["unique_code"], p["is_aggregated"]) for p in body["products"]] == [
        ("P-1", False),
        ("P-2", True),
    ]
    assert body["products"][0]["aggregated_at"] is None
    assert body["products"][1]["aggregated_at"] is not None


async def test_get_missing_batch_is_404_problem(client):
    body = problem(await client.get("/api/v1/batches/7"), 404)
    assert body["detail"] == "Batch not found (id 7)"


# -- list ---------------------------------------------------------------------------------


async def test_list_shape_defaults_and_counts(client):
    batch = await create_batch(client, number=1)
    await create_batch(client, number=2)
    await add_codes(client, batch["id"], ["A", "B", "C"])
    await aggregate(client, batch["id"], "A")

    response = await client.get("/api/v1/batches")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "total", "offset", "limit"}
    assert (body["total"], body["offset"], body["limit"]) == (2, 0, 20)
    assert all(set(item) == LIST_ITEM_KEYS for item in body["items"])
    first, second = body["items"]
    assert (first["product_count"], first["aggregated_count"]) == (3, 1)
    assert (second["product_count"], second["aggregated_count"]) == (0, 0)


async def test_list_pagination(client):
    await create_batches(client, [shift_task_en(n) for n in range(1, 26)])
    page = (await client.get("/api/v1/batches", params={"offset": 20, "limit": 3})).json()
    assert [b["batch_number"] for b in page["items"]] == [21, 22, 23]
    assert (page["total"], page["offset"], page["limit"]) == (25, 20, 3)
    assert (await client.get("/api/v1/batches?limit=1000")).json()["limit"] == 1000
    past_end = (await client.get("/api/v1/batches?offset=100")).json()
    assert (past_end["items"], past_end["total"]) == ([], 25)


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 1001}, ["query", "limit"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"is_closed": "maybe"}, ["query", "is_closed"]),
        ({"batch_date": "2024-13-01"}, ["query", "batch_date"]),
        ({"batch_date_from": "yesterday"}, ["query", "batch_date_from"]),
        ({"batch_number": "x"}, ["query", "batch_number"]),
        ({"work_center_id": 0}, ["query", "work_center_id"]),
    ],
)
async def test_list_rejects_bad_query(client, params, loc):
    problem(await client.get("/api/v1/batches", params=params), 422, loc)


async def test_list_filters(client):
    await create_batches(
        client,
        [
            shift_task_en(1, "2024-03-01", shift="1", nomenclature="Bolt"),
            shift_task_en(2, "2024-03-02", shift="2", nomenclature="Nut", is_closed=True),
            shift_task_en(
                3, "2024-03-03", shift="2", work_center_identifier="WC-2", work_center="L2"
            ),
            shift_task_en(1, "2024-03-04", nomenclature="Bolt"),
        ],
    )
    wc2 = (await client.get("/api/v1/batches?batch_number=3")).json()["items"][0]["work_center"]

    async def numbers_dates(**params):
        response = await client.get("/api/v1/batches", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["items"])
        return [(b["batch_number"], b["batch_date"][-2:]) for b in body["items"]]

    assert await numbers_dates(is_closed="true") == [(2, "02")]
    assert await numbers_dates(is_closed="false") == [(1, "01"), (3, "03"), (1, "04")]
    assert await numbers_dates(batch_number=1) == [(1, "01"), (1, "04")]
    assert await numbers_dates(batch_date="2024-03-02") == [(2, "02")]
    assert await numbers_dates(batch_date_from="2024-03-03") == [(3, "03"), (1, "04")]
    assert await numbers_dates(batch_date_to="2024-03-02") == [(1, "01"), (2, "02")]
    assert await numbers_dates(batch_date_from="2024-03-02", batch_date_to="2024-03-03") == [
        (2, "02"),
        (3, "03"),
    ]
    assert await numbers_dates(work_center_id=wc2["id"]) == [(3, "03")]
    assert await numbers_dates(shift="2") == [(2, "02"), (3, "03")]
    assert await numbers_dates(nomenclature="Bolt") == [(1, "01"), (1, "04")]
    assert await numbers_dates(batch_number=1, nomenclature="Bolt", batch_date="2024-03-04") == [
        (1, "04")
    ]
    assert await numbers_dates(work_center_id=999) == []


# -- patch / close ------------------------------------------------------------------------


async def test_patch_updates_any_field_with_either_key(client):
    batch = await create_batch(client)
    response = await client.patch(
        f"/api/v1/batches/{batch['id']}",
        json={
            "team": "Night crew",
            "Номенклатура": "Гайка",
            "ДатаВремяОкончанияСмены": "2024-02-01T22:00:00+02:00",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == BATCH_KEYS
    assert (body["team"], body["nomenclature"]) == ("Night crew", "Гайка")
    assert parse_time(body["shift_end"]) == dt.datetime(2024, 2, 1, 20, tzinfo=UTC)
    assert body["shift"] == batch["shift"]
    assert parse_time(body["updated_at"]) > parse_time(batch["updated_at"])
    assert await event_types() == ["batch_created", "batch_updated"]


async def test_patch_close_and_reopen(client):
    batch = await create_batch(client)
    closed = (await client.patch(f"/api/v1/batches/{batch['id']}", json={"is_closed": True})).json()
    assert closed["is_closed"] is True
    closed_at = parse_time(closed["closed_at"])
    assert closed_at <= dt.datetime.now(UTC)
    # Closing again keeps the original close time.
    again = (
        await client.patch(f"/api/v1/batches/{batch['id']}", json={"СтатусЗакрытия": True})
    ).json()
    assert parse_time(again["closed_at"]) == closed_at
    reopened = (
        await client.patch(f"/api/v1/batches/{batch['id']}", json={"is_closed": False})
    ).json()
    assert (reopened["is_closed"], reopened["closed_at"]) == (False, None)
    assert await event_types() == [
        "batch_created",
        "batch_updated",
        "batch_closed",
        "batch_updated",
        "batch_updated",
    ]


async def test_patch_moves_batch_to_another_work_center(client):
    batch = await create_batch(client)
    body = (
        await client.patch(
            f"/api/v1/batches/{batch['id']}",
            json={"work_center_identifier": "WC-9", "work_center_name": "Line 9"},
        )
    ).json()
    assert body["work_center"] == {"id": 2, "identifier": "WC-9", "name": "Line 9"}


async def test_patch_number_date_collision_is_409(client):
    await create_batch(client, number=1)
    second = await create_batch(client, number=2)
    response = await client.patch(f"/api/v1/batches/{second['id']}", json={"batch_number": 1})
    problem(response, 409, ["body", "batch_number"])
    assert (await client.get(f"/api/v1/batches/{second['id']}")).json()["batch_number"] == 2


async def test_patch_shift_end_before_stored_start_is_422(client):
    batch = await create_batch(client)
    response = await client.patch(
        f"/api/v1/batches/{batch['id']}", json={"shift_end": "2024-02-01T07:00:00Z"}
    )
    problem(response, 422, ["body", "shift_end"])
    assert (await client.get(f"/api/v1/batches/{batch['id']}")).json() == {
        **batch,
        "products": [],
    }


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"colour": "red"}, ["body", "colour"]),
        ({"team": ""}, ["body", "team"]),
        ({"Бригада": "   "}, ["body", "Бригада"]),
        ({"batch_number": "one"}, ["body", "batch_number"]),
        ({"is_closed": "yes"}, ["body", "is_closed"]),
        ({"shift": "1", "Смена": "2"}, ["body", "Смена"]),
        ({"batch_date": "2024-02-30"}, ["body", "batch_date"]),
        (None, ["body"]),
        ([{"team": "x"}], ["body"]),
    ],
)
async def test_patch_rejects_bad_input(client, payload, loc):
    batch = await create_batch(client)
    problem(await client.patch(f"/api/v1/batches/{batch['id']}", json=payload), 422, loc)
    assert await event_types() == ["batch_created"]


async def test_patch_missing_batch_is_404(client):
    problem(await client.patch("/api/v1/batches/5", json={"team": "x"}), 404)


async def test_close_endpoint(client):
    batch = await create_batch(client)
    response = await client.post(f"/api/v1/batches/{batch['id']}/close")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == BATCH_KEYS
    assert body["is_closed"] is True
    assert body["closed_at"] is not None
    assert await event_types() == ["batch_created", "batch_updated", "batch_closed"]
    problem(await client.post("/api/v1/batches/99/close"), 404)


def _insert_batch_in_another_transaction(number: int, inserted: threading.Event) -> None:
    """A concurrent writer: inserts batch `number` and commits only after a pause."""

    async def run() -> None:
        connection = await asyncpg.connect(TEST_DATABASE_URL.replace("+asyncpg", ""))
        try:
            async with connection.transaction():
                await connection.execute(
                    """
                    INSERT INTO batches (task_description, work_center_id, shift, team,
                        batch_number, batch_date, nomenclature, ekn_code, shift_start, shift_end)
                    VALUES ('race', 1, '1', 'T', $1, '2024-02-01', 'N', 'E', now(), now())
                    """,
                    number,
                )
                inserted.set()
                await asyncio.sleep(0.5)
        finally:
            await connection.close()

    asyncio.run(run())


async def test_concurrent_insert_of_the_same_batch_is_409_not_500(client):
    await create_batch(client, number=1)  # work center 1
    inserted = threading.Event()
    # The test client blocks this loop while it runs the app, so the other writer gets a thread.
    writer = threading.Thread(target=_insert_batch_in_another_transaction, args=(7, inserted))
    writer.start()
    try:
        assert inserted.wait(10)
        response = await client.post("/api/v1/batches", json=[shift_task_en(7)])
    finally:
        writer.join()
    # The insert waited for the other transaction's commit, skipped the row and named it.
    assert problem(response, 409)["detail"].startswith("Batch 7 of 2024-02-01 already exists")
    assert await count_rows("batches") == 2
