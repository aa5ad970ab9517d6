"""Importing 1C shift tasks from xlsx or csv files.

Two stages. The api inspects an upload before accepting it (`inspect_upload`: type, size,
an xlsx that is really a zip and no zip bomb, a csv that is text) and stores it; nothing is
queued for a file refused there. The import_batches actor then reads the stored file
(`read_import`): the header must name every required field (English or 1C Russian keys),
the data rows must not exceed IMPORT_MAX_ROWS, and each row is validated with the same rules
as POST /api/v1/batches (`BatchInput` + `resolve_batch`); valid rows are written chunk by
chunk with the 1C overwrite rule (`create_batches(..., overwrite=True)`).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

import msgspec
from python_calamine import CalamineError, CalamineWorkbook
from sqlalchemy.ext.asyncio import AsyncSession

from app.batches.schemas import BATCH_KEYS, BatchFeed, BatchFields, BatchInput, resolve_batch
from app.batches.service import create_batches
from app.config import Settings
from app.errors import NUL_MESSAGE, DomainError, FieldError, InputInvalid, loc_from_msgspec
from app.transfer.schemas import ImportFormat

CHUNK_ROWS: Final = 1_000
SNIFF_BYTES: Final = 64 * 1024

XLSX_CONTENT_TYPES: Final = {
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
CSV_CONTENT_TYPES: Final = {
    "text/csv",
    "text/plain",
    "application/csv",
    "text/comma-separated-values",
    "application/vnd.ms-excel",  # what Windows browsers send for .csv
}
# Sent when the client does not know the type: the file name and content decide.
GENERIC_CONTENT_TYPES: Final = {"", "application/octet-stream", "binary/octet-stream"}

# Columns our own export writes that are not shift-task fields: ignored, so an export
# can be imported back as it is.
EXPORT_ONLY_COLUMNS: Final = frozenset(
    {
        "id",
        "closed_at",
        "product_count",
        "aggregated_count",
        "created_at",
        "updated_at",
        "work_center_id",
    }
)
TEXT_FIELDS: Final = frozenset(
    {
        "task_description",
        "work_center_name",
        "work_center_identifier",
        "shift",
        "team",
        "nomenclature",
        "ekn_code",
    }
)
TRUE_WORDS: Final = frozenset({"true", "1", "yes", "y", "да", "д", "истина"})
FALSE_WORDS: Final = frozenset({"false", "0", "no", "n", "нет", "н", "ложь"})
# 1C writes dates as 30.01.2024 and date-times as 30.01.2024 20:00:00.
RU_DATE: Final = re.compile(
    r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$"
)
# header (casefolded) -> (field, the key as BatchInput spells it)
KNOWN_COLUMNS: Final = {
    name.casefold(): (field, name) for field, names in BATCH_KEYS.items() for name in names
}
REQUIRED_FIELDS: Final = tuple(field for field in BATCH_KEYS if field != "is_closed")


class UnsupportedFileType(DomainError):
    status_code = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class FileTooLarge(DomainError):
    status_code = 413
    title = "Request body too large"
    slug = "request-body-too-large"


class ImportRejected(Exception):
    """The stored file cannot be imported at all (the task fails; nothing was written)."""


# -- upload inspection (api) ---------------------------------------------------------------


def import_format(file_name: str, content_type: str) -> ImportFormat:
    """xlsx or csv by the file's extension (by the declared type when it has none); else 415."""
    base_type = content_type.split(";", 1)[0].strip().lower()
    extension = os.path.splitext(file_name)[1].lower()
    by_type: ImportFormat | None = (
        "xlsx"
        if base_type in XLSX_CONTENT_TYPES
        else "csv"
        if base_type in CSV_CONTENT_TYPES
        else None
    )
    by_name: ImportFormat | None = (
        "xlsx" if extension == ".xlsx" else "csv" if extension == ".csv" else None
    )
    fmt = by_name if extension else by_type
    if fmt is None or (base_type not in GENERIC_CONTENT_TYPES and by_type is None):
        raise UnsupportedFileType(
            f"Cannot import '{file_name}' ({content_type or 'no content type'}): send an .xlsx "
            "workbook or a .csv file",
            [_file_error("expected an .xlsx or .csv file", "file_type")],
        )
    return fmt


def _file_error(message: str, kind: str) -> FieldError:
    return FieldError(loc=["body", "file"], msg=message, type=kind)


def _refuse(message: str, kind: str = "file_invalid") -> InputInvalid:
    return InputInvalid(f"Invalid value for 'file': {message}", [_file_error(message, kind)])


def inspect_upload(source: IO[bytes], fmt: ImportFormat, settings: Settings) -> int:
    """Check a received upload without parsing it all; returns its size. Runs in a thread."""
    source.seek(0, io.SEEK_END)
    size = source.tell()
    source.seek(0)
    if size == 0:
        raise _refuse("the file is empty", "file_empty")
    if size > settings.import_max_bytes:
        raise FileTooLarge(
            f"The file has {size} bytes; the limit is {settings.import_max_bytes}",
            [_file_error(f"larger than {settings.import_max_bytes} bytes", "file_too_large")],
        )
    if fmt == "xlsx":
        _inspect_xlsx(source, size, settings)
    else:
        _inspect_csv(source.read(SNIFF_BYTES))
    source.seek(0)
    return size


def _inspect_xlsx(source: IO[bytes], size: int, settings: Settings) -> None:
    if source.read(4) != b"PK\x03\x04":
        raise _refuse("not an xlsx workbook (an .xlsx file is a ZIP archive; this is not)")
    source.seek(0)
    try:
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(f"not an xlsx workbook (damaged ZIP archive: {exc})") from exc
    names = {member.filename for member in members}
    if "xl/workbook.xml" not in names:
        raise _refuse("not an xlsx workbook (no xl/workbook.xml inside the archive)")
    expanded = sum(member.file_size for member in members)
    ratio = expanded / size
    if expanded > settings.import_max_uncompressed_bytes or ratio > settings.import_max_zip_ratio:
        raise _refuse(
            f"refused as a possible zip bomb: {size} bytes expand to {expanded} "
            f"({ratio:.0f}:1; limits {settings.import_max_uncompressed_bytes} bytes, "
            f"{settings.import_max_zip_ratio}:1)",
            "zip_bomb",
        )


def _inspect_csv(head: bytes) -> None:
    if b"\x00" in head:
        raise _refuse("not a text CSV file (it contains binary data)")
    try:
        _decoder_for(head).decode(head, final=False)
    except UnicodeDecodeError as exc:  # pragma: no cover - cp1251 decodes almost anything
        raise _refuse(f"not a text CSV file ({exc})") from exc


def _decoder_for(head: bytes) -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder(_csv_encoding(head))()


def _csv_encoding(head: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes; otherwise Windows-1251, 1C's default."""
    try:
        # A multi-byte character cut at the sample's end is not an error.
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1251"
    return "utf-8-sig"


# -- reading and validating (worker) -------------------------------------------------------


@dataclass(frozen=True)
class Column:
    index: int
    field: str
    key: str  # the BatchInput attribute (the header as the schema spells it)


@dataclass(frozen=True)
class ParsedRow:
    number: int  # the row number a spreadsheet program shows (header = 1)
    batch: BatchFields | None
    error: str | None


def _text_rows(path: str, fmt: ImportFormat) -> Iterator[tuple[int, list[Any]]]:
    """(row number, cells) for every row of the first sheet, header included."""
    if fmt == "csv":
        with open(path, "rb") as raw:
            encoding = _csv_encoding(raw.read(SNIFF_BYTES))
        with open(path, encoding=encoding, newline="") as text:
            sample = text.read(SNIFF_BYTES)
            text.seek(0)
            try:
                dialect: Any = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            # strict: a quote that never closes is an error instead of one cell swallowing
            # every following row (the import would then succeed with rows missing).
            reader = csv.reader(text, dialect, strict=True)
            number = 0
            try:
                for number, cells in enumerate(reader, start=1):
                    yield number, cells
            except csv.Error as exc:
                reason = (
                    "a quoted field opened in it is never closed"
                    if "unexpected end of data" in str(exc)
                    else str(exc)
                )
                raise ImportRejected(
                    f"The CSV file cannot be read: row {number + 1} (line {reader.line_num}): "
                    f"{reason}; nothing was imported"
                ) from exc
            except UnicodeDecodeError as exc:
                raise ImportRejected(f"The CSV file cannot be read: {exc}") from exc
        return
    try:
        workbook = CalamineWorkbook.from_path(path)
        sheet = workbook.get_sheet_by_index(0)
        first_row = sheet.start[0] + 1 if sheet.start else 1
        yield from enumerate(sheet.iter_rows(), start=first_row)
    except CalamineError as exc:
        raise ImportRejected(f"The xlsx workbook cannot be read: {exc}") from exc


def _blank(cells: list[Any]) -> bool:
    return all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in cells)


def _columns(header: list[Any]) -> list[Column]:
    columns: list[Column] = []
    unknown: list[str] = []
    seen: dict[str, str] = {}
    for index, cell in enumerate(header):
        name = str(cell).strip() if cell is not None else ""
        if not name or name.casefold() in EXPORT_ONLY_COLUMNS:
            continue
        known = KNOWN_COLUMNS.get(name.casefold())
        if known is None:
            unknown.append(name)
            continue
        field, key = known
        if field in seen:
            raise ImportRejected(
                f"Columns '{seen[field]}' and '{name}' name the same field; keep one"
            )
        seen[field] = name
        columns.append(Column(index, field, key))
    if unknown:
        raise ImportRejected(
            "Unknown columns: "
            + ", ".join(f"'{u}'" for u in unknown)
            + ". Expected the 1C or English keys: "
            + ", ".join(f"{names[-1]}/{names[0]}" for names in BATCH_KEYS.values())
        )
    missing = [f for f in REQUIRED_FIELDS if f not in seen]
    if missing:
        raise ImportRejected(
            "Missing required columns: "
            + ", ".join(f"{BATCH_KEYS[f][-1]} ({BATCH_KEYS[f][0]})" for f in missing)
        )
    return columns


def _ru_datetime(text: str) -> dt.datetime | None:
    match = RU_DATE.match(text)
    if match is None:
        return None
    day, month, year, hour, minute, second = match.groups()
    try:
        return dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return None


def _cell(field: str, value: Any) -> Any:
    """A cell as BatchInput accepts it: numbers, dates and words become the field's type."""
    if isinstance(value, str):
        value = value.strip()
    if field in TEXT_FIELDS:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if field == "batch_number" and isinstance(value, float) and value.is_integer():
        return int(value)
    if field == "batch_date":
        if isinstance(value, dt.datetime) and value.time() == dt.time(0):
            return value.date()
        if (
            isinstance(value, str)
            and (parsed := _ru_datetime(value))
            and parsed.time() == dt.time(0)
        ):
            return parsed.date()
    if field in ("shift_start", "shift_end"):
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return dt.datetime.combine(value, dt.time(0))
        if isinstance(value, str):
            return _ru_datetime(value) or value.replace(" ", "T", 1)
    if field == "is_closed":
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.casefold() in TRUE_WORDS | FALSE_WORDS:
            return value.casefold() in TRUE_WORDS
    return value


def _row_batch(columns: list[Column], cells: list[Any]) -> BatchFields:
    values: dict[str, Any] = {}
    for column in columns:
        value = cells[column.index] if column.index < len(cells) else None
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # an empty cell is a missing field
        if isinstance(value, str) and "\x00" in value:
            raise InputInvalid.at(["row", column.key], NUL_MESSAGE)
        values[column.key] = _cell(column.field, value)
    try:
        item = msgspec.convert(values, BatchInput, strict=False)
    except msgspec.ValidationError as exc:
        loc, message = loc_from_msgspec(str(exc), "row")
        raise InputInvalid.at(loc, message) from exc
    return resolve_batch(item, ["row"], partial=False)


class ImportFile:
    """A stored import file opened for reading: its columns, size and validated rows."""

    def __init__(self, path: str, fmt: ImportFormat, max_rows: int) -> None:
        self.path = path
        self.fmt = fmt
        rows = self._rows()
        header = next(rows, None)
        if header is None:
            raise ImportRejected("The file has no header row and no data")
        self.columns = _columns(header[1])
        self.total = sum(1 for _ in rows)
        if self.total == 0:
            raise ImportRejected("The file has a header but no data rows")
        if self.total > max_rows:
            raise ImportRejected(f"The file has {self.total} data rows; the limit is {max_rows}")

    def _rows(self) -> Iterator[tuple[int, list[Any]]]:
        return ((n, cells) for n, cells in _text_rows(self.path, self.fmt) if not _blank(cells))

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[list[ParsedRow]]:
        """Validated rows in chunks; a repeated (batch_number, batch_date) is an error row."""
        first_row: dict[tuple[int, dt.date], int] = {}
        chunk: list[ParsedRow] = []
        rows = self._rows()
        next(rows)  # the header
        for number, cells in rows:
            try:
                batch = _row_batch(self.columns, cells)
            except InputInvalid as exc:
                chunk.append(ParsedRow(number, None, exc.detail))
            else:
                key = (batch.values["batch_number"], batch.values["batch_date"])
                if key in first_row:
                    message = (
                        f"Batch {key[0]} of {key[1].isoformat()} repeats row "
                        f"{first_row[key]}; a file may name each batch once"
                    )
                    chunk.append(ParsedRow(number, None, message))
                else:
                    first_row[key] = number
                    chunk.append(ParsedRow(number, batch, None))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


async def write_rows(session: AsyncSession, rows: list[ParsedRow]) -> tuple[int, int]:
    """Write a chunk's valid rows (1C overwrite rule); returns (created, updated)."""
    items = [row.batch for row in rows if row.batch is not None]
    if not items:
        return 0, 0
    _, created = await create_batches(session, BatchFeed.of(items), overwrite=True)
    return created, len(items) - created
