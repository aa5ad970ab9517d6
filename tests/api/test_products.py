"""Products: one code (201/409/404) or a bulk array that skips and reports; listing."""

from __future__ import annotations

import pytest

from tests.factories import (
    add_codes,
    aggregate,
    count_rows,
    create_batch,
    parse_time,
    problem,
)

PRODUCT_KEYS = {"id", "unique_code", "batch_id", "is_aggregated", "aggregated_at", "created_at"}


async def test_add_one_by_batch_id(client):
    batch = await create_batch(client)
    response = await client.post(
        "/api/v1/products", json={"unique_code": "CODE-1", "batch_id": batch["id"]}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == PRODUCT_KEYS
    assert body["unique_code"] == "CODE-1"
    assert body["batch_id"] == batch["id"]
    assert (body["is_aggregated"], body["aggregated_at"]) == (False, None)
    assert parse_time(body["created_at"]).tzinfo is not None
    products = (await client.get(f"/api/v1/batches/{batch['id']}")).json()["products"]
    assert products == [
        {"id": body["id"], "unique_code": "CODE-1", "is_aggregated": False, "aggregated_at": None}
    ]


async def test_add_one_by_number_and_date_in_either_language(client):
    batch = await create_batch(client, number=77, date="2024-05-06")
    english = await client.post(
        "/api/v1/products",
        json={"unique_code": "EN-1", "batch_number": 77, "batch_date": "2024-05-06"},
    )
    russian = await client.post(
        "/api/v1/products",
        json={"УникальныйКодПродукта": "RU-1", "НомерПартии": 77, "ДатаПартии": "2024-05-06"},
    )
    assert english.status_code == 201, english.text
    assert russian.status_code == 201, russian.text
    assert english.json()["batch_id"] == russian.json()["batch_id"] == batch["id"]
    assert russian.json()["unique_code"] == "RU-1"


async def test_code_is_stripped(client):
    batch = await create_batch(client)
    body = (
        await client.post(
            "/api/v1/products", json={"unique_code": "  PAD-1 ", "batch_id": batch["id"]}
        )
    ).json()
    assert body["unique_code"] == "PAD-1"


async def test_duplicate_code_is_409(client):
    batch = await create_batch(client)
    other = await create_batch(client, number=2)
    await add_codes(client, batch["id"], ["DUP"])
    response = await client.post(
        "/api/v1/products", json={"unique_code": "DUP", "batch_id": other["id"]}
    )
    body = problem(response, 409)
    assert "DUP" in body["detail"]
    assert await count_rows("products") == 1


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"unique_code": "X", "batch_id": 42}, "Batch not found (id 42)"),
        (
            {"unique_code": "X", "batch_number": 5, "batch_date": "2024-01-01"},
            "Batch not found (number 5, date 2024-01-01)",
        ),
    ],
)
async def test_unknown_batch_is_404(client, payload, detail):
    body = problem(await client.post("/api/v1/products", json=payload), 404)
    assert body["detail"] == detail
    assert await count_rows("products") == 0


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"batch_id": 1}, ["body", "unique_code"]),
        ({"УникальныйКодПродукта": "A", "НомерПартии": 1}, ["body", "ДатаПартии"]),
        ({"unique_code": "A"}, ["body", "batch_id"]),
        ({"unique_code": "", "batch_id": 1}, ["body", "unique_code"]),
        ({"unique_code": "  ", "batch_id": 1}, ["body", "unique_code"]),
        ({"unique_code": "A", "batch_id": 0}, ["body", "batch_id"]),
        ({"unique_code": "A", "batch_id": "one"}, ["body", "batch_id"]),
        ({"НомерПартии": 1, "ДатаПартии": "2024-02-01"}, ["body", "УникальныйКодПродукта"]),
        ({"УникальныйКодПродукта": "A"}, ["body", "НомерПартии"]),
        ({"unique_code": 5, "batch_id": 1}, ["body", "unique_code"]),
        ({"unique_code": "A", "batch_id": 1, "colour": "red"}, ["body", "colour"]),
        ({"unique_code": "A", "УникальныйКодПродукта": "A", "batch_id": 1}, None),
        ({"unique_code": "A", "batch_id": 1, "batch_number": 1}, ["body", "batch_number"]),
        (
            {"unique_code": "A", "batch_number": 1, "batch_date": "01.01.2024"},
            ["body", "batch_date"],
        ),
        ({"unique_code": "A" * 256, "batch_id": 1}, ["body", "unique_code"]),
        ({"unique_code": "A\x00", "batch_id": 1}, ["body", "unique_code"]),
        ([], ["body"]),
        ([{"unique_code": "A", "batch_id": 1}, {"batch_id": 1}], ["body", 1, "unique_code"]),
        ([{"unique_code": "A", "batch_id": 1}, {"unique_code": ""}], ["body", 1, "unique_code"]),
        (None, ["body"]),
        ("A", ["body"]),
    ],
)
async def test_bad_product_input_is_422(client, payload, loc):
    await create_batch(client)
    body = problem(await client.post("/api/v1/products", json=payload), 422, loc)
    assert body["errors"]
    assert await count_rows("products") == 0


async def test_bulk_creates_and_reports_skipped(client):
    batch = await create_batch(client, number=1, date="2024-01-01")
    await add_codes(client, batch["id"], ["OLD"])
    response = await client.post(
        "/api/v1/products",
        json=[
            {"unique_code": "N1", "batch_id": batch["id"]},
            {"unique_code": "OLD", "batch_id": batch["id"]},
            {"unique_code": "N2", "batch_id": 999},
            {"УникальныйКодПродукта": "N3", "НомерПартии": 1, "ДатаПартии": "2024-01-01"},
            {"unique_code": "N4", "batch_number": 2, "batch_date": "2024-01-01"},
            {"unique_code": "N1", "batch_id": batch["id"]},
        ],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] == 2
    assert sorted(body["skipped"], key=lambda s: s["reason"]) == [
        {"unique_code": "N2", "reason": "Batch not found (id 999)"},
        {"unique_code": "N4", "reason": "Batch not found (number 2, date 2024-01-01)"},
        {"unique_code": "OLD", "reason": "already exists"},
        {"unique_code": "N1", "reason": "duplicate in request"},
    ]
    listed = (await client.get("/api/v1/products", params={"batch_id": batch["id"]})).json()
    assert [p["unique_code"] for p in listed["items"]] == ["OLD", "N1", "N3"]


async def test_bulk_100k_codes_in_one_request(client):
    batch = await create_batch(client)
    codes = [f"BULK-{i:06d}" for i in range(100_000)]
    response = await client.post(
        "/api/v1/products", json=[{"unique_code": c, "batch_id": batch["id"]} for c in codes]
    )
    assert response.status_code == 201, response.text[:500]
    assert response.json() == {"created": 100_000, "skipped": []}
    assert await count_rows("products") == 100_000
    listed = (await client.get(f"/api/v1/batches?batch_number={batch['batch_number']}")).json()
    assert listed["items"][0]["product_count"] == 100_000


async def test_bulk_over_100k_is_422(client):
    batch = await create_batch(client)
    payload = [{"unique_code": f"C{i}", "batch_id": batch["id"]} for i in range(100_001)]
    problem(await client.post("/api/v1/products", json=payload), 422, ["body"])
    assert await count_rows("products") == 0


async def test_list_products_filters_and_shape(client):
    first = await create_batch(client, number=1)
    second = await create_batch(client, number=2)
    await add_codes(client, first["id"], ["A1", "A2", "A3"])
    await add_codes(client, second["id"], ["B1"])
    await aggregate(client, first["id"], "A2")

    async def codes(**params):
        response = await client.get("/api/v1/products", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "total", "offset", "limit"}
        assert all(set(p) == PRODUCT_KEYS for p in body["items"])
        return [p["unique_code"] for p in body["items"]], body["total"]

    assert await codes() == (["A1", "A2", "A3", "B1"], 4)
    assert await codes(batch_id=first["id"]) == (["A1", "A2", "A3"], 3)
    assert await codes(is_aggregated="true") == (["A2"], 1)
    assert await codes(is_aggregated="false", batch_id=first["id"]) == (["A1", "A3"], 2)
    assert await codes(unique_code="B1") == (["B1"], 1)
    assert await codes(offset=1, limit=2) == (["A2", "A3"], 4)
    default = (await client.get("/api/v1/products")).json()
    assert (default["offset"], default["limit"]) == (0, 20)


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 1001}, ["query", "limit"]),
        ({"batch_id": 0}, ["query", "batch_id"]),
        ({"is_aggregated": "sometimes"}, ["query", "is_aggregated"]),
    ],
)
async def test_list_products_rejects_bad_query(client, params, loc):
    problem(await client.get("/api/v1/products", params=params), 422, loc)


async def test_a_closed_batch_takes_no_new_products(client):
    batch = await create_batch(client, number=7, is_closed=True)
    open_batch = await create_batch(client, number=8)
    response = await client.post(
        "/api/v1/products", json={"unique_code": "LATE", "batch_id": batch["id"]}
    )
    assert problem(response, 400)["detail"] == f"Batch {batch['id']} is closed"
    response = await client.post(
        "/api/v1/products",
        json=[
            {"unique_code": "LATE-1", "batch_id": batch["id"]},
            {"unique_code": "OK-1", "batch_id": open_batch["id"]},
            {"unique_code": "LATE-2", "batch_number": 7, "batch_date": "2024-02-01"},
        ],
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "created": 1,
        "skipped": [
            {"unique_code": "LATE-1", "reason": f"Batch {batch['id']} is closed"},
            {"unique_code": "LATE-2", "reason": f"Batch {batch['id']} is closed"},
        ],
    }
    assert await count_rows("products") == 1


async def test_products_by_batch_is_a_page_with_has_more(client):
    batch = await create_batch(client, number=1)
    other = await create_batch(client, number=2)
    await add_codes(client, batch["id"], ["A1", "A2", "A3"])
    await add_codes(client, other["id"], ["B1"])
    await aggregate(client, batch["id"], "A2")
    url = f"/api/v1/products/by-batch/{batch['id']}"
    first = (await client.get(url, params={"limit": 2})).json()
    assert set(first) == {"items", "total", "offset", "limit", "has_more"}
    assert [p["unique_code"] for p in first["items"]] == ["A1", "A2"]
    assert (first["total"], first["offset"], first["limit"], first["has_more"]) == (3, 0, 2, True)
    last = (await client.get(url, params={"offset": 2, "limit": 2})).json()
    assert ([p["unique_code"] for p in last["items"]], last["has_more"]) == (["A3"], False)
    aggregated = (await client.get(url, params={"is_aggregated": "true"})).json()
    assert [p["unique_code"] for p in aggregated["items"]] == ["A2"]
    assert set(first["items"][0]) == PRODUCT_KEYS
    # the same service as GET /products?batch_id=
    main = (await client.get("/api/v1/products", params={"batch_id": batch["id"]})).json()
    assert main["items"] == (await client.get(url)).json()["items"]
    problem(await client.get("/api/v1/products/by-batch/99"), 404)
    problem(await client.get("/api/v1/products/by-batch/0"), 422, ["path", "batch_id"])
