"""Files for import/report/export tests: xlsx and csv builders, readers, S3 and HTTP helpers."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import httpx
import xlsxwriter
from python_calamine import CalamineWorkbook

from app.storage import s3_client
from tests.factories import shift_task_ru

RU_HEADER = list(shift_task_ru().keys())
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def ru_row(number: int, date: str = "2024-01-30", **overrides: Any) -> list[Any]:
    """One 1C shift task as a spreadsheet row under RU_HEADER."""
    return list(shift_task_ru(number, date, **overrides).values())


def xlsx_bytes(rows: list[list[Any]], sheet: str = "Сменные задания") -> bytes:
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(
        buffer, {"in_memory": True, "default_date_format": "yyyy-mm-dd hh:mm:ss"}
    )
    worksheet = workbook.add_worksheet(sheet)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            worksheet.write(r, c, value)
    workbook.close()
    return buffer.getvalue()


def csv_bytes(rows: list[list[Any]], encoding: str = "utf-8", delimiter: str = ",") -> bytes:
    text = io.StringIO()
    csv.writer(text, delimiter=delimiter).writerows(rows)
    return text.getvalue().encode(encoding)


def zip_bomb_xlsx(expanded: int = 64 * 1024 * 1024) -> bytes:
    """A valid-looking xlsx whose one member inflates ~1000:1."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * expanded)
    return buffer.getvalue()


def read_xlsx(data: bytes) -> dict[str, list[list[Any]]]:
    workbook = CalamineWorkbook.from_filelike(io.BytesIO(data))
    return {name: workbook.get_sheet_by_name(name).to_python() for name in workbook.sheet_names}


def xlsx_member(data: bytes, name: str) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name).decode()


def xlsx_members(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.namelist()


async def fetch(url: str) -> httpx.Response:
    """GET a presigned URL over real HTTP, as a browser would."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text[:500]
    return response


async def object_keys(bucket: str) -> list[str]:
    async with s3_client() as client:
        listing = await client.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


async def upload_import(client: Any, name: str, data: bytes, content_type: str = XLSX) -> Any:
    return await client.post("/api/v1/batches/import", files={"file": (name, data, content_type)})
