"""Reports, import, export and notifications at the HTTP edge: what is accepted, what is refused.

No workers here: an accepted request leaves a PENDING task (and, for an import, the stored
upload); a refused one leaves nothing at all.
"""

from __future__ import annotations

import pytest

from app.config import get_settings
from tests.factories import count_rows, create_batch, problem
from tests.file_factories import (
    RU_HEADER,
    XLSX,
    csv_bytes,
    object_keys,
    ru_row,
    upload_import,
    xlsx_bytes,
    zip_bomb_xlsx,
)


async def test_ready_checks_s3(client):
    response = await client.get("/ready")
    assert response.json()["checks"]["s3"] == "ok", response.text


async def test_report_is_queued(client):
    batch = await create_batch(client)
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/reports", json={"format": "pdf", "email": "a@b.example"}
    )
    assert response.status_code == 202, response.text
    task = (await client.get(f"/api/v1/tasks/{response.json()['task_id']}")).json()
    assert (task["kind"], task["status"]) == ("generate_report", "PENDING")


async def test_report_for_missing_batch_is_404(client):
    response = await client.post("/api/v1/batches/999/reports", json={"format": "excel"})
    assert "Batch not found (id 999)" in problem(response, 404)["detail"]
    assert await count_rows("tasks") == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"format": "docx"}, ["body", "format"]),
        ({}, ["body", "format"]),
        ({"format": "pdf", "email": "not-an-email"}, ["body", "email"]),
        ({"format": "pdf", "colour": "red"}, ["body", "colour"]),
    ],
)
async def test_report_bad_input(client, body, loc):
    batch = await create_batch(client)
    problem(await client.post(f"/api/v1/batches/{batch['id']}/reports", json=body), 422, loc)
    assert await count_rows("tasks") == 0


async def test_import_is_stored_and_queued(client):
    data = xlsx_bytes([RU_HEADER, ru_row(1)])
    response = await upload_import(client, "смена.xlsx", data)
    assert response.status_code == 202, response.text
    task = (await client.get(f"/api/v1/tasks/{response.json()['task_id']}")).json()
    assert (task["kind"], task["status"]) == ("import_batches", "PENDING")
    assert await count_rows("files", f"kind = 'import' AND size = {len(data)}") == 1
    assert await count_rows("batches") == 0  # the worker imports, not the api


async def _refused(client, response, status, detail_part):
    body = problem(response, status)
    said = body["detail"] if status != 422 else " ".join(e["msg"] for e in body["detail"])
    assert detail_part in said, body
    assert await count_rows("tasks") == 0
    assert await count_rows("files") == 0
    return body


async def test_import_refuses_files_up_front(client):
    before = await object_keys(get_settings().s3_bucket_imports)
    cases = [
        (("photo.png", b"\x89PNG\r\n\x1a\n", "image/png"), 415, "send an .xlsx"),
        (("shift.xlsx", b"", XLSX), 422, "empty"),
        (("shift.csv", b"", "text/csv"), 422, "empty"),
        (("shift.xlsx", b"this is a text file, not a workbook", XLSX), 422, "not an xlsx"),
        (("shift.xlsx", b"PK\x03\x04 broken", XLSX), 422, "damaged ZIP"),
        (("shift.xlsx", zip_bomb_xlsx(), XLSX), 422, "zip bomb"),
        (("shift.csv", b"a,b\x00\x01\x02", "text/csv"), 422, "binary"),
        (("shift.csv", csv_bytes([RU_HEADER]), "image/jpeg"), 415, "send an .xlsx"),
    ]
    for (name, data, content_type), status, detail in cases:
        body = await _refused(
            client, await upload_import(client, name, data, content_type), status, detail
        )
        if status == 422:
            assert body["errors"][0]["loc"] == ["body", "file"], body
    assert await object_keys(get_settings().s3_bucket_imports) == before


async def test_import_refuses_too_large_file(client):
    data = b"x" * (get_settings().import_max_bytes + 1)
    await _refused(client, await upload_import(client, "big.csv", data, "text/csv"), 413, "")


async def test_import_needs_multipart_with_a_file(client):
    await _refused(
        client, await client.post("/api/v1/batches/import", json={"file": "x"}), 415, "multipart"
    )
    response = await client.post(
        "/api/v1/batches/import", files={"other": ("a.csv", b"a,b\n", "text/csv")}
    )
    body = await _refused(client, response, 422, "file")
    assert body["errors"][0]["loc"] == ["body", "file"]


async def test_export_is_queued(client):
    response = await client.post(
        "/api/v1/batches/export",
        json={"format": "csv", "filters": {"is_closed": False, "batch_date_from": "2024-01-01"}},
    )
    assert response.status_code == 202, response.text
    task = (await client.get(f"/api/v1/tasks/{response.json()['task_id']}")).json()
    assert task["kind"] == "export_batches"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"format": "pdf"}, ["body", "format"]),
        ({"format": "csv", "filters": {"colour": "red"}}, ["body", "filters", "colour"]),
        (
            {"format": "csv", "filters": {"work_center_id": 0}},
            ["body", "filters", "work_center_id"],
        ),
        (
            {"format": "csv", "filters": {"batch_date": "yesterday"}},
            ["body", "filters", "batch_date"],
        ),
        ({"format": "excel", "filters": {"is_closed": "maybe"}}, ["body", "filters", "is_closed"]),
    ],
)
async def test_export_bad_filters(client, body, loc):
    problem(await client.post("/api/v1/batches/export", json=body), 422, loc)
    assert await count_rows("tasks") == 0


async def test_test_notification_goes_to_fast_queue_with_high_priority(client):
    response = await client.post(
        "/api/v1/notifications/test", json={"email": "lead@plant.example", "message": "Привет"}
    )
    assert response.status_code == 202, response.text
    assert await count_rows("tasks", "kind = 'send_notification' AND queue = 'fast'") == 1
    assert await count_rows("outbox", "(payload->>'priority')::int = 9") == 1


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"email": "x", "message": "m"}, ["body", "email"]),
        ({"email": "a@b.example", "message": "   "}, ["body", "message"]),
        ({"email": "a@b.example"}, ["body", "message"]),
        ({"email": "a@b.example", "message": "m", "cc": "x"}, ["body", "cc"]),
    ],
)
async def test_test_notification_bad_input(client, body, loc):
    problem(await client.post("/api/v1/notifications/test", json=body), 422, loc)
    assert await count_rows("tasks") == 0


async def test_openapi_documents_file_endpoints(client):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    upload = paths["/api/v1/batches/import"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"202", "413", "415", "422"} <= set(upload["responses"])
    assert "/api/v1/batches/{batch_id}/reports" in paths
    assert "/api/v1/batches/export" in paths
    assert "/api/v1/notifications/test" in paths


async def test_binary_form_field_without_filename_is_422_not_500(client):
    body = (
        b'--xx\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x89PNG\r\n\x1a\n\xff\xfe'
        b"\r\n--xx--\r\n"
    )
    response = await client.post(
        "/api/v1/batches/import",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=xx"},
    )
    error = problem(response, 422, ["body", "file"])["detail"][0]
    assert error["type"] == "multipart_invalid"
    assert await count_rows("tasks") == 0
