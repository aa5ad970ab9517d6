"""File rules without the queue: import limits and parsing, cell safety, SMTP delivery."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import AsyncIterator

import msgspec
import pytest

from app.config import load_settings
from app.errors import InputInvalid
from app.notifications.jobs import NotificationRejected, deliver
from app.notifications.schemas import Notification
from app.reports.tabular import csv_cell, formula_like
from app.transfer.importer import (
    FileTooLarge,
    ImportFile,
    ImportRejected,
    UnsupportedFileType,
    import_format,
    inspect_upload,
)
from tests.file_factories import RU_HEADER, csv_bytes, ru_row, xlsx_bytes


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("a.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
        ("a.XLSX", "application/octet-stream", "xlsx"),
        ("a.csv", "text/csv; charset=utf-8", "csv"),
        ("a.csv", "application/vnd.ms-excel", "csv"),
        ("export", "text/csv", "csv"),
    ],
)
def test_import_format(name, content_type, expected):
    assert import_format(name, content_type) == expected


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.xls", "application/vnd.ms-excel"), ("a.pdf", "application/pdf"), ("a.csv", "image/png")],
)
def test_import_format_refuses_other_types(name, content_type):
    with pytest.raises(UnsupportedFileType):
        import_format(name, content_type)


def test_upload_size_limit():
    settings = load_settings({"IMPORT_MAX_BYTES": "10"})
    with pytest.raises(FileTooLarge):
        inspect_upload(io.BytesIO(b"a,b\n1,2\n3,4\n"), "csv", settings)


def test_zip_ratio_limit():
    data = xlsx_bytes([RU_HEADER, *[ru_row(n) for n in range(1, 200)]])
    assert inspect_upload(io.BytesIO(data), "xlsx", load_settings({})) == len(data)
    with pytest.raises(InputInvalid, match="zip bomb"):
        inspect_upload(io.BytesIO(data), "xlsx", load_settings({"IMPORT_MAX_ZIP_RATIO": "2"}))


def _file(tmp_path, data: bytes, fmt: str, max_rows: int = 100) -> ImportFile:
    path = tmp_path / f"source.{fmt}"
    path.write_bytes(data)
    return ImportFile(str(path), fmt, max_rows)  # type: ignore[arg-type]


def test_row_limit_refuses_before_reading_rows(tmp_path):
    data = xlsx_bytes([RU_HEADER, *[ru_row(n) for n in range(1, 6)]])
    assert _file(tmp_path, data, "xlsx", max_rows=5).total == 5
    with pytest.raises(ImportRejected, match="has 5 data rows; the limit is 4"):
        _file(tmp_path, data, "xlsx", max_rows=4)


def test_header_only_and_empty_files_are_refused(tmp_path):
    with pytest.raises(ImportRejected, match="no data rows"):
        _file(tmp_path, csv_bytes([RU_HEADER]), "csv")
    with pytest.raises(ImportRejected, match="no header"):
        _file(tmp_path, b"\n\n", "csv")


def test_english_headers_any_case_and_export_columns(tmp_path):
    payload = {
        "ID": 5,
        "Batch_Number": 42,
        "batch_date": "2024-02-01",
        "task_description": "Task",
        "work_center": "Line",
        "work_center_identifier": "L1",
        "shift": "1",
        "team": "A",
        "nomenclature": "N",
        "ekn_code": "E",
        "shift_start": "2024-02-01 08:00:00",
        "shift_end": "2024-02-01T20:00:00+03:00",
        "product_count": 10,
    }
    source = _file(
        tmp_path, csv_bytes([list(payload), list(payload.values())], delimiter="\t"), "csv"
    )
    (chunk,) = list(source.chunks())
    (row,) = chunk
    assert row.error is None, row.error
    assert row.number == 2
    assert row.batch is not None
    values = row.batch.values
    assert values["batch_number"] == 42
    assert values["shift_start"] == dt.datetime(2024, 2, 1, 8, tzinfo=dt.UTC)  # naive = TZ (UTC)
    assert values["shift_end"].utcoffset() == dt.timedelta(hours=3)


def test_same_field_twice_is_refused(tmp_path):
    header = [*RU_HEADER, "shift"]
    with pytest.raises(ImportRejected, match="'Смена' and 'shift' name the same field"):
        _file(tmp_path, csv_bytes([header, [*ru_row(1), "2"]]), "csv")


@pytest.mark.parametrize(
    ("value", "risky"),
    [("=1+1", True), ("+7 900", True), ("-5", True), ("@SUM", True), ("\tx", True), ("Сыр", False)],
)
def test_formula_neutralisation(value, risky):
    assert formula_like(value) is risky
    assert csv_cell(value) == ("'" + value if risky else value)


class SmtpSink:
    """A minimal SMTP server that accepts (or refuses) one message: enough for aiosmtplib."""

    def __init__(self, reject_rcpt: bool = False) -> None:
        self.reject_rcpt = reject_rcpt
        self.messages: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        reply("220 sink ready")
        while line := await reader.readline():
            command = line.decode().strip().upper()
            if command.startswith(("EHLO", "HELO")):
                reply("250 sink")
            elif command.startswith("RCPT") and self.reject_rcpt:
                reply("550 no such user")
            elif command == "DATA":
                reply("354 go ahead")
                body = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    body += chunk
                self.messages.append(body)
                reply("250 queued")
            elif command == "QUIT":
                reply("221 bye")
                await writer.drain()
                break
            else:
                reply("250 ok")
            await writer.drain()
        writer.close()


async def _sink(reject_rcpt: bool = False) -> AsyncIterator[tuple[SmtpSink, int]]:
    sink = SmtpSink(reject_rcpt)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    async with server:
        yield sink, server.sockets[0].getsockname()[1]


NOTE = Notification(to="lead@plant.example", subject="Отчёт готов", body="Ссылка: http://x")


async def test_smtp_delivery():
    async for sink, port in _sink():
        settings = load_settings({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)})
        result = await deliver(NOTE, settings)
        assert msgspec.to_builtins(result) == {
            "to": "lead@plant.example",
            "transport": "smtp",
            "delivered": True,
        }
        (message,) = sink.messages
        assert b"To: lead@plant.example" in message
        assert b"Subject: =?utf-8?" in message  # the Cyrillic subject, RFC 2047-encoded


async def test_smtp_refusal_is_permanent():
    async for _, port in _sink(reject_rcpt=True):
        settings = load_settings({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)})
        with pytest.raises(NotificationRejected, match="refused"):
            await deliver(NOTE, settings)


async def test_without_smtp_the_notification_is_logged():
    result = await deliver(NOTE, load_settings({"SMTP_HOST": ""}))
    assert (result.transport, result.delivered) == ("log", False)
