"""Bad input and errors: RFC 9457 problem+json, 422 naming the key as sent, nothing written."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest

from tests.factories import (
    count_rows,
    create_batch,
    problem,
    shift_task_en,
    shift_task_ru,
    without,
)

MAX_ID = 2**31 - 1


async def assert_nothing_written() -> None:
    for table in ("batches", "work_centers", "products", "tasks", "outbox"):
        assert await count_rows(table) == 0, table


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ([shift_task_ru(Цвет="красный")], ["body", 0, "Цвет"]),
        ([shift_task_en(), shift_task_en(2, colour="red")], ["body", 1, "colour"]),
        ([shift_task_ru(НомерПартии="один")], ["body", 0, "НомерПартии"]),
        ([shift_task_ru(НомерПартии=0)], ["body", 0, "НомерПартии"]),
        ([shift_task_ru(НомерПартии=2**31)], ["body", 0, "НомерПартии"]),
        ([shift_task_en(is_closed="no")], ["body", 0, "is_closed"]),
        ([shift_task_ru(Смена=1)], ["body", 0, "Смена"]),
        ([shift_task_ru(Смена="")], ["body", 0, "Смена"]),
        ([shift_task_ru(Смена="   ")], ["body", 0, "Смена"]),
        ([shift_task_en(team=None)], ["body", 0, "team"]),
        ([without(shift_task_ru(), "Смена")], ["body", 0, "Смена"]),
        ([without(shift_task_en(), "shift")], ["body", 0, "shift"]),
        ([shift_task_ru(ДатаПартии="30.01.2024")], ["body", 0, "ДатаПартии"]),
        ([shift_task_en(batch_date="2024-02-30")], ["body", 0, "batch_date"]),
        ([shift_task_ru(ДатаВремяНачалаСмены="вчера")], ["body", 0, "ДатаВремяНачалаСмены"]),
        ([shift_task_en(shift_start="2024-02-01T25:00:00")], ["body", 0, "shift_start"]),
        (
            [shift_task_ru(ДатаВремяОкончанияСмены="2024-01-30T19:00:00+05:00")],
            ["body", 0, "ДатаВремяОкончанияСмены"],
        ),
        ([shift_task_ru(Номенклатура="a\x00b")], ["body", 0, "Номенклатура"]),
        (
            [shift_task_ru(ДатаВремяНачалаСмены="0001-01-01T00:00:00+05:00")],
            ["body", 0, "ДатаВремяНачалаСмены"],
        ),
        ([shift_task_en(shift_end="9999-12-31T23:00:00-05:00")], ["body", 0, "shift_end"]),
        ([shift_task_en(Смена="2")], ["body", 0, "Смена"]),
        ([shift_task_ru(work_center_name="Line")], ["body", 0, "РабочийЦентр"]),
        ([shift_task_en(shift_start="2024-02-01T08:00:00Z"), "x"], ["body", 1]),
        ([], ["body"]),
        ({"batch_number": 1}, ["body"]),
        (None, ["body"]),
        ("text", ["body"]),
    ],
)
async def test_bad_batch_feed_is_422_naming_the_key(client, payload, loc):
    response = await client.post("/api/v1/batches", json=payload)
    body = problem(response, 422, loc)
    assert body["title"] == "Validation failed"
    await assert_nothing_written()


WEBHOOK = {"url": "https://erp.example.com/hook", "events": ["batch_created"], "secret_key": "k"}


@pytest.mark.parametrize(
    ("path", "payload", "loc"),
    [
        ("/api/v1/batches", [shift_task_ru(СтатусЗакрытия=0)], ["body", 0, "СтатусЗакрытия"]),
        ("/api/v1/batches", [shift_task_ru(НомерПартии="22222")], ["body", 0, "НомерПартии"]),
        ("/api/v1/batches", [shift_task_en(shift_start=1706774400)], ["body", 0, "shift_start"]),
        ("/api/v1/products", {"unique_code": "A", "batch_id": "1"}, ["body", "batch_id"]),
        ("/api/v1/webhooks", {**WEBHOOK, "is_active": 1}, ["body", "is_active"]),
        ("/api/v1/webhooks", {**WEBHOOK, "timeout": "10"}, ["body", "timeout"]),
        (
            "/api/v1/batches/export",
            {"format": "csv", "filters": {"is_closed": 0}},
            ["body", "filters", "is_closed"],
        ),
    ],
)
async def test_json_bodies_take_only_their_documented_json_types(client, path, payload, loc):
    # No lax conversion: the OpenAPI document says boolean, integer, string, and means it.
    problem(await client.post(path, json=payload), 422, loc)
    await assert_nothing_written()
    assert await count_rows("webhook_subscriptions") == 0


async def test_a_number_with_a_zero_fraction_is_an_integer(client):
    # JSON Schema's rule: 22222.0 is the integer 22222.
    [batch] = (
        await client.post("/api/v1/batches", json=[shift_task_ru(НомерПартии=22222.0)])
    ).json()
    assert batch["batch_number"] == 22222
    product = {"unique_code": "A", "batch_id": float(batch["id"])}
    assert (await client.post("/api/v1/products", json=product)).status_code == 201
    problem(
        await client.post("/api/v1/batches", json=[shift_task_en(batch_number=1.5)]),
        422,
        ["body", 0, "batch_number"],
    )


@pytest.mark.parametrize("year", ["0001", "9999"])
async def test_shift_times_are_in_years_0002_to_9998(client, year):
    # Whatever the offset, the instant then fits the years 1..9999 it is stored in (UTC).
    payload = [shift_task_en(shift_start=f"{year}-06-01T00:00:00Z")]
    error = problem(await client.post("/api/v1/batches", json=payload), 422)["detail"][0]
    assert error["loc"] == ["body", 0, "shift_start"]
    assert error["msg"] == "datetime out of range (years 0002..9998)"
    await assert_nothing_written()


async def test_more_than_1000_batches_is_422(client):
    payload = [shift_task_en(n) for n in range(1, 1002)]
    problem(await client.post("/api/v1/batches", json=payload), 422, ["body"])
    await assert_nothing_written()


async def test_exactly_1000_batches_is_accepted(client):
    response = await client.post("/api/v1/batches", json=[shift_task_en(n) for n in range(1, 1001)])
    assert response.status_code == 201, response.text[:500]
    assert len(response.json()) == 1000


async def test_both_keys_for_one_field_is_422(client):
    response = await client.post("/api/v1/batches", json=[shift_task_ru(batch_number=22222)])
    body = problem(response, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} & {
        ("body", 0, "batch_number"),
        ("body", 0, "НомерПартии"),
    }
    assert "same field" in body["detail"][0]["msg"]
    await assert_nothing_written()


# An array body and an object-or-array body.
JSON_BODY_PATHS = pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/products"])


@JSON_BODY_PATHS
async def test_non_json_body_is_422(client, path):
    response = await client.post(
        path, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert problem(response, 422, ["body"])["errors"][0]["type"] == "json_invalid"
    await assert_nothing_written()


@JSON_BODY_PATHS
async def test_json_null_body_is_422(client, path):
    response = await client.post(
        path, content=b"null", headers={"content-type": "application/json"}
    )
    problem(response, 422, ["body"])


@JSON_BODY_PATHS
async def test_empty_body_is_422(client, path):
    response = await client.post(path, content=b"", headers={"content-type": "application/json"})
    problem(response, 422, ["body"])


async def test_oversized_body_is_413(client):
    huge = b"[" + b" " * (33 * 1024 * 1024) + b"]"
    response = await client.post(
        "/api/v1/batches", content=huge, headers={"content-type": "application/json"}
    )
    problem(response, 413)
    await assert_nothing_written()


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/batches/0", "batch_id"),
        ("/api/v1/batches/-1", "batch_id"),
        (f"/api/v1/batches/{MAX_ID + 1}", "batch_id"),
        ("/api/v1/work-centers/0", "work_center_id"),
        (f"/api/v1/work-centers/{2**63}", "work_center_id"),
    ],
)
async def test_out_of_range_path_ids_are_422(client, path, name):
    problem(await client.get(path), 422, ["path", name])


async def test_largest_id_is_a_plain_404(client):
    problem(await client.get(f"/api/v1/batches/{MAX_ID}"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/batches/0/aggregate"),
        ("post", f"/api/v1/batches/{MAX_ID + 1}/aggregate-async"),
        ("post", "/api/v1/batches/-5/close"),
        ("patch", "/api/v1/batches/0"),
    ],
)
async def test_out_of_range_ids_on_writes_are_422(client, method, path):
    response = await getattr(client, method)(path, json={"unique_code": "X"})
    problem(response, 422, ["path", "batch_id"])


async def test_unknown_route_is_404_problem(client):
    body = problem(await client.get("/api/v1/nothing-here"), 404)
    assert "/api/v1/nothing-here" in body["detail"]
    problem(await client.get("/nope"), 404)


async def test_wrong_method_is_405_problem(client):
    problem(await client.delete("/api/v1/batches"), 405)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/batches/",
        "/api/v1/products/",
        "/api/v1/tasks/",
        "/api/v1/work-centers/",
        "/health/",
        "/ready/",
    ],
)
async def test_trailing_slash_works_on_collections(client, path):
    assert (await client.get(path)).status_code == 200, path


async def test_trailing_slash_works_on_items_and_actions(client):
    batch = await create_batch(client)
    assert (await client.get(f"/api/v1/batches/{batch['id']}/")).status_code == 200
    assert (
        await client.get(f"/api/v1/work-centers/{batch['work_center']['id']}/")
    ).status_code == 200
    response = await client.post("/api/v1/batches/", json=[shift_task_en(2)])
    assert response.status_code == 201
    response = await client.patch(f"/api/v1/batches/{batch['id']}/", json={"team": "T"})
    assert response.status_code == 200
    response = await client.post(f"/api/v1/batches/{batch['id']}/close/")
    assert response.status_code == 200


async def test_field_error_message_is_short(client):
    response = await client.post("/api/v1/batches", json=[shift_task_ru(Смена="  ")])
    body = problem(response, 422, ["body", 0, "Смена"])
    assert body["detail"][0]["msg"] == "must not be blank"


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/api/v1/batches?shift=%00", ["query", "shift"]),
        ("/api/v1/batches?nomenclature=a%00", ["query", "nomenclature"]),
        ("/api/v1/products?unique_code=%00", ["query", "unique_code"]),
        ("/api/v1/tasks?kind=%00", ["query", "kind"]),
    ],
)
async def test_nul_characters_in_filters_are_422(client, path, loc):
    problem(await client.get(path), 422, loc)


# --- FastAPI-compatible 422s and the rest of the error contract ----------------------------


async def test_validation_detail_is_the_fastapi_list(client):
    response = await client.post("/api/v1/batches", json=[shift_task_ru(Смена=1)])
    body = problem(response, 422, ["body", 0, "Смена"])
    assert body["detail"] == body["errors"]
    assert body["detail"][0]["loc"] == ["body", 0, "Смена"]
    assert set(body) >= {"type", "title", "status"}


async def test_other_problems_keep_a_sentence(client):
    body = problem(await client.get("/api/v1/batches/7"), 404)
    assert body["detail"] == "Batch not found (id 7)"


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("get", "/api/v1/batches/abc", "batch_id"),
        ("patch", "/api/v1/batches/1.5", "batch_id"),
        ("post", "/api/v1/batches/x/close", "batch_id"),
        ("post", "/api/v1/batches/abc/aggregate", "batch_id"),
        ("get", "/api/v1/batches/abc/statistics", "batch_id"),
        ("get", "/api/v1/work-centers/abc", "work_center_id"),
        ("get", "/api/v1/webhooks/abc", "webhook_id"),
        ("get", "/api/v1/products/by-batch/abc", "batch_id"),
    ],
)
async def test_non_integer_path_ids_are_422(client, method, path, name):
    kwargs = {"json": {"unique_code": "X"}} if method != "get" else {}
    problem(await getattr(client, method)(path, **kwargs), 422, ["path", name])


JSON_WRITES = [
    ("/api/v1/batches", b'[{"shift":"\xff"}]'),
    ("/api/v1/products", b'{"unique_code":"\xff","batch_id":1}'),
    ("/api/v1/batches/export", b'{"format":"csv","filters":{"shift":"\xff"}}'),
    (
        "/api/v1/webhooks",
        b'{"url":"http://h.example","events":["batch_created"],"secret_key":"\xff"}',
    ),
    ("/api/v1/notifications/test", b'{"email":"a@b.example","message":"\xff"}'),
]


@pytest.mark.parametrize(("path", "body"), JSON_WRITES)
async def test_invalid_utf8_in_a_json_body_is_422(client, path, body):
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert problem(response, 422, ["body"])["detail"][0]["type"] == "json_invalid"
    await assert_nothing_written()


@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/batches/export", "/api/v1/products"])
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
async def test_json_nested_too_deep_is_422(client, path, depth):
    body = b'{"a":' * depth + b"1" + b"}" * depth
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    error = problem(response, 422, ["body"])["detail"][0]
    assert error["type"] == "json_invalid"
    assert "64" in error["msg"]
    await assert_nothing_written()


async def test_json_nested_64_deep_is_not_refused_as_malformed(client):
    body = b"[" * 64 + b"]" * 64
    response = await client.post(
        "/api/v1/batches", content=body, headers={"content-type": "application/json"}
    )
    assert problem(response, 422)["detail"][0]["type"] != "json_invalid"


async def test_brackets_inside_strings_do_not_count_as_nesting(client):
    batch = await create_batch(client)
    code = "[" * 100 + '\\"{' * 50
    response = await client.post(
        "/api/v1/products",
        content=f'{{"unique_code": "{code}", "batch_id": {batch["id"]}}}'.encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("path", "payload", "loc"),
    [
        (
            "/api/v1/webhooks",
            {"url": "http://h.example", "events": ["batch_created"], "secret_key": "a\x00b"},
            ["body", "secret_key"],
        ),
        (
            "/api/v1/notifications/test",
            {"email": "a@b.example", "message": "hello\x00"},
            ["body", "message"],
        ),
        ("/api/v1/batches", [shift_task_ru(Номенклатура="a\x00b")], ["body", 0, "Номенклатура"]),
    ],
)
async def test_nul_characters_are_422_said_plainly(client, path, payload, loc):
    error = problem(await client.post(path, json=payload), 422, loc)["detail"][0]
    assert error["msg"] == "must not contain NUL characters"
    await assert_nothing_written()
    assert await count_rows("webhook_subscriptions") == 0


async def test_sql_parameters_are_never_in_error_messages():
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from app.db import transaction

    with pytest.raises(DBAPIError) as raised:
        async with transaction() as session:
            await session.execute(
                text("SELECT 1 / (length(:secret) - length(:secret))"), {"secret": "hunter2-key"}
            )
    assert "hunter2-key" not in str(raised.value)
    assert "parameters hidden" in str(raised.value)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "text/xml"],
)
@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/products", "/api/v1/webhooks"])
async def test_json_routes_refuse_other_media_types(client, path, content_type):
    response = await client.post(
        path, content=b'[{"a": 1}]', headers={"content-type": content_type}
    )
    assert content_type in problem(response, 415)["detail"]
    await assert_nothing_written()


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.1c+json"],
)
async def test_json_media_types_are_accepted(client, content_type):
    response = await client.post(
        "/api/v1/batches",
        content=json.dumps([shift_task_ru()]).encode(),
        headers={"content-type": content_type},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/products"])
async def test_a_leading_utf8_bom_is_accepted(client, path):
    if path == "/api/v1/products":
        batch = await create_batch(client)
        payload: Any = {"unique_code": "BOM-1", "batch_id": batch["id"]}
    else:
        payload = [shift_task_ru()]
    body = codecs.BOM_UTF8 + json.dumps(payload, ensure_ascii=False).encode()
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text


@JSON_BODY_PATHS
async def test_malformed_json_is_said_once(client, path):
    response = await client.post(
        path, content=b"{not json", headers={"content-type": "application/json"}
    )
    error = problem(response, 422, ["body"])["detail"][0]
    assert error["msg"].startswith("JSON is malformed: ")
    assert "malformed: JSON is malformed" not in response.text


async def test_broken_multipart_is_not_called_json(client):
    response = await client.post(
        "/api/v1/batches/import",
        content=b"--xx\r\nnot a form",
        headers={"content-type": "multipart/form-data; boundary=xx"},
    )
    assert problem(response, 422, ["body"])["detail"][0]["type"] == "multipart_invalid"


async def test_413_states_the_limit(client):
    huge = b"[" + b" " * (33 * 1024 * 1024) + b"]"
    response = await client.post(
        "/api/v1/batches", content=huge, headers={"content-type": "application/json"}
    )
    assert str(32 * 1024 * 1024) in problem(response, 413)["detail"]
