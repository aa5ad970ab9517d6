"""Import, export, file cleanup and notifications end to end: real workers, real S3 over HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile

import pytest

from app.db import transaction
from app.outbox import enqueue_task
from app.storage import StoredObjectMissing, bucket_for, download_to, record_file, store
from tests.conftest import wait_for_task
from tests.factories import count_rows, create_batches, event_types, shift_task_en, shift_task_ru
from tests.file_factories import (
    RU_HEADER,
    csv_bytes,
    fetch,
    read_xlsx,
    ru_row,
    upload_import,
    xlsx_bytes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("workers")]


async def _import(client, name, data, content_type, *, status="SUCCESS"):
    response = await upload_import(client, name, data, content_type)
    assert response.status_code == 202, response.text
    task = await wait_for_task(client, response.json()["task_id"], timeout=60)
    assert task["status"] == status, task
    return task


async def _batches(client, **filters):
    response = await client.get("/api/v1/batches", params={"limit": 1000, **filters})
    return response.json()["items"]


async def test_import_xlsx_with_good_and_bad_rows(client):
    await create_batches(client, [shift_task_ru(100, Номенклатура="Старое название")])
    col = {key: i for i, key in enumerate(RU_HEADER)}
    missing_shift = ru_row(2)
    missing_shift[col["Смена"]] = "  "
    bad_number = ru_row(3)
    bad_number[col["НомерПартии"]] = "три"
    reversed_shift = ru_row(4, ДатаВремяОкончанияСмены="2024-01-30T19:00:00+05:00")
    typed = ru_row(5, Смена=2, КодЕКН=456678)  # numbers as numbers, dates as Excel dates
    typed[col["ДатаПартии"]] = dt.datetime(2024, 1, 31)
    typed[col["ДатаВремяНачалаСмены"]] = dt.datetime(2024, 1, 31, 8, 0)
    typed[col["ДатаВремяОкончанияСмены"]] = dt.datetime(2024, 1, 31, 20, 0)
    rows = [
        RU_HEADER,
        ru_row(1),  # row 2: new
        ru_row(100, Номенклатура="Новое название"),  # row 3: exists -> overwritten
        missing_shift,  # row 4
        bad_number,  # row 5
        reversed_shift,  # row 6
        [None] * len(RU_HEADER),  # row 7: blank, not counted
        ru_row(1),  # row 8: repeats row 2
        typed,  # row 9: new
    ]
    task = await _import(client, "задания.xlsx", xlsx_bytes(rows), "application/octet-stream")

    assert task["result"] == {
        "total": 7,
        "created": 2,
        "updated": 1,
        "skipped": 4,
        "errors": [
            {
                "row": 4,
                "error": "Invalid value for 'Смена': required field is missing "
                "(send 'shift' or 'Смена')",
            },
            {"row": 5, "error": "Invalid value for 'НомерПартии': Expected `int`, got `str`"},
            {
                "row": 6,
                "error": "Invalid value for 'ДатаВремяОкончанияСмены': "
                "shift end must not be before shift start",
            },
            {
                "row": 8,
                "error": "Batch 1 of 2024-01-30 repeats row 2; a file may name each batch once",
            },
        ],
    }
    assert task["progress"]["current"] == task["progress"]["total"] == 7
    batches = {b["batch_number"]: b for b in await _batches(client)}
    assert set(batches) == {1, 5, 100}
    assert batches[100]["nomenclature"] == "Новое название"
    assert (batches[5]["shift"], batches[5]["ekn_code"], batches[5]["batch_date"]) == (
        "2",
        "456678",
        "2024-01-31",
    )
    assert batches[5]["shift_start"] == "2024-01-31T08:00:00Z"  # naive = TZ (UTC here)
    assert "import_completed" in await event_types()


async def test_import_1c_csv_in_windows_1251(client):
    header = [*RU_HEADER]
    rows = [
        header,
        ru_row(
            7,
            СтатусЗакрытия="Да",
            ДатаПартии="30.01.2024",
            ДатаВремяНачалаСмены="30.01.2024 08:00:00",
            ДатаВремяОкончанияСмены="30.01.2024 20:00",
        ),
        ru_row(8, СтатусЗакрытия="нет"),
    ]
    data = csv_bytes(rows, encoding="cp1251", delimiter=";")
    task = await _import(client, "выгрузка.csv", data, "text/csv")
    assert task["result"] == {"total": 2, "created": 2, "updated": 0, "skipped": 0, "errors": []}
    batches = {b["batch_number"]: b for b in await _batches(client)}
    assert batches[7]["is_closed"] is True
    assert batches[7]["closed_at"]
    assert batches[7]["team"] == "Бригада №4"
    assert batches[7]["shift_end"] == "2024-01-30T20:00:00Z"
    assert batches[8]["is_closed"] is False


async def test_csv_quote_that_never_closes_fails_the_import_and_writes_nothing(client):
    # Row 3 opens a quote in Бригада and never closes it: read leniently, rows 3..5 became
    # one cell and the task "succeeded" with two of its five rows gone.
    lines = csv_bytes([RU_HEADER, ru_row(1), ru_row(2)]).decode().splitlines()
    team = RU_HEADER.index("Бригада")
    broken = ru_row(3)
    broken[team] = '"Бригада №4'
    lines.append(",".join(str(cell) for cell in broken))
    lines += csv_bytes([ru_row(4), ru_row(5)]).decode().splitlines()
    data = ("\r\n".join(lines) + "\r\n").encode()
    task = await _import(client, "broken.csv", data, "text/csv", status="FAILURE")
    message = task["error"]["message"]
    assert "row 4" in message, message  # the header is row 1
    assert "never closed" in message, message
    assert await count_rows("batches") == 0


async def test_csv_with_quoted_multiline_cells_counts_every_row(client):
    rows = [RU_HEADER, ru_row(1, Номенклатура="две\nстроки"), ru_row(2), ru_row(3)]
    task = await _import(client, "ok.csv", csv_bytes(rows), "text/csv")
    assert task["result"] == {"total": 3, "created": 3, "updated": 0, "skipped": 0, "errors": []}


async def test_import_without_required_columns_fails_and_writes_nothing(client):
    keep = [k for k in RU_HEADER if k not in ("Смена", "КодЕКН")]
    rows = [keep, [shift_task_ru(1)[k] for k in keep]]
    task = await _import(
        client, "a.xlsx", xlsx_bytes(rows), "application/octet-stream", status="FAILURE"
    )
    assert task["error"]["message"] == "Missing required columns: Смена (shift), КодЕКН (ekn_code)"
    assert await count_rows("batches") == 0


async def test_import_unknown_column_and_unreadable_workbook_fail(client):
    rows = [[*RU_HEADER, "Примечание"], [*ru_row(1), "x"]]
    task = await _import(client, "a.csv", csv_bytes(rows), "text/csv", status="FAILURE")
    assert task["error"]["message"].startswith("Unknown columns: 'Примечание'.")

    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("xl/workbook.xml", "<not-a-workbook")
    task = await _import(
        client, "b.xlsx", broken.getvalue(), "application/octet-stream", status="FAILURE"
    )
    assert task["error"]["message"].startswith("The xlsx workbook cannot be read")
    assert await count_rows("batches") == 0


async def _export(client, fmt, filters=None):
    response = await client.post(
        "/api/v1/batches/export", json={"format": fmt, "filters": filters or {}}
    )
    assert response.status_code == 202, response.text
    task = await wait_for_task(client, response.json()["task_id"], timeout=60)
    assert task["status"] == "SUCCESS", task
    result = task["result"]
    assert {"file_url", "file_name", "size", "expires_at", "rows"} <= set(result)
    content = (await fetch(result["file_url"])).content
    assert len(content) == result["size"]
    return result, content


async def _three_batches(client):
    await create_batches(
        client,
        [
            shift_task_en(1, "2024-02-01", nomenclature="=cmd|' /C calc'!A0"),
            shift_task_en(2, "2024-02-01", is_closed=True, team="@SUM(A1)"),
            shift_task_en(3, "2024-03-01", nomenclature="Сыр «Российский»", shift="2"),
        ],
    )


async def test_export_excel_with_filters(client):
    await _three_batches(client)
    result, content = await _export(
        client, "excel", {"batch_date": "2024-02-01", "is_closed": False}
    )
    assert result["rows"] == 1
    assert result["file_name"].endswith(".xlsx")
    rows = read_xlsx(content)["Batches"]
    assert rows[0][:3] == ["id", "batch_number", "batch_date"]
    assert len(rows) == 2
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["batch_number"] == 1
    assert record["nomenclature"] == "=cmd|' /C calc'!A0"  # text, never a formula

    result, content = await _export(client, "excel", {"nomenclature": "Сыр «Российский»"})
    record = dict(zip(*read_xlsx(content)["Batches"], strict=True))
    assert (record["batch_number"], record["shift"]) == (3, "2")


async def test_export_csv_neutralises_formulas(client):
    await _three_batches(client)
    result, content = await _export(client, "csv")
    assert result["rows"] == 3
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))
    assert [r["batch_number"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["nomenclature"] == "'=cmd|' /C calc'!A0"
    assert rows[1]["team"] == "'@SUM(A1)"
    assert rows[2]["nomenclature"] == "Сыр «Российский»"
    assert rows[1]["is_closed"] == "true"


async def test_exported_workbook_imports_back(client):
    await _three_batches(client)
    _, content = await _export(client, "excel", {"batch_date_to": "2024-02-28"})
    task = await _import(client, "export.xlsx", content, "application/octet-stream")
    assert task["result"] == {"total": 2, "created": 0, "updated": 2, "skipped": 0, "errors": []}


async def _store(key: str, created_at: dt.datetime) -> None:
    stored = await store("export", key, io.BytesIO(b"a,b\n"), "text/csv")
    async with transaction() as session:
        row = await record_file(session, stored, None)
        row.created_at = created_at


async def test_cleanup_removes_only_expired_files(client):
    now = dt.datetime.now(dt.UTC)
    await _store("cleanup/old.csv", now - dt.timedelta(days=31))
    await _store("cleanup/fresh.csv", now - dt.timedelta(days=29))
    async with transaction() as session:
        task = await enqueue_task(session, "cleanup_files")
    done = await wait_for_task(client, str(task.id))
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"deleted": 1, "bytes_freed": 4}
    assert await count_rows("files", "key = 'cleanup/fresh.csv'") == 1
    assert await count_rows("files") == 1
    with pytest.raises(StoredObjectMissing):
        await download_to(bucket_for("export"), "cleanup/old.csv", io.BytesIO())
    assert await download_to(bucket_for("export"), "cleanup/fresh.csv", io.BytesIO()) == 4


async def test_test_notification_is_sent(client):
    response = await client.post(
        "/api/v1/notifications/test", json={"email": "lead@plant.example", "message": "Проверка"}
    )
    task = await wait_for_task(client, response.json()["task_id"])
    assert task["status"] == "SUCCESS", task
    assert task["result"] == {"to": "lead@plant.example", "transport": "log", "delivered": False}
