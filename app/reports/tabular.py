"""Writing rows to xlsx and CSV files safely, and feeding a writer thread from async queries.

Reports and exports share this: xlsxwriter in constant-memory mode with every
"helpful" string conversion off (a cell that looks like a formula stays text), formula
injection neutralised (`=`, `+`, `-`, `@`, tab, CR), datetimes shown in the configured
time zone (Excel has no time zones).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

import xlsxwriter
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from app.config import get_settings

T = TypeVar("T")

# Spreadsheet programs evaluate a cell starting with one of these as a formula (OWASP).
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_TEXT: Final = 32_767  # Excel's limit for one cell


def formula_like(value: str) -> bool:
    return value.startswith(FORMULA_PREFIXES)


def csv_safe(value: str) -> str:
    """CSV has no cell types: a leading apostrophe makes Excel/LibreOffice show text."""
    return "'" + value if formula_like(value) else value


def local_time(value: dt.datetime) -> dt.datetime:
    """A naive wall-clock time in TZ, what a spreadsheet cell can hold."""
    return value.astimezone(ZoneInfo(get_settings().tz)).replace(tzinfo=None)


def new_workbook(path: str) -> xlsxwriter.Workbook:
    return xlsxwriter.Workbook(
        path,
        {
            # Rows are flushed to a temp file as written: memory does not grow with rows.
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_numbers": False,
            "strings_to_urls": False,
            "use_zip64": True,
        },
    )


class CellFormats:
    """The formats one workbook's cells use."""

    def __init__(self, workbook: xlsxwriter.Workbook) -> None:
        self.header = workbook.add_format(
            {"bold": True, "bg_color": "#DDE6F0", "border": 1, "text_wrap": True}
        )
        self.title = workbook.add_format({"bold": True, "font_size": 14})
        self.label = workbook.add_format({"bold": True})
        # quote_prefix: Excel keeps the cell text even when a user edits it.
        self.quoted = workbook.add_format({"quote_prefix": True})
        self.date = workbook.add_format({"num_format": "yyyy-mm-dd"})
        self.datetime = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.percent = workbook.add_format({"num_format": "0.0"})


def write_cell(
    sheet: Worksheet,
    row: int,
    col: int,
    value: Any,
    formats: CellFormats,
    fmt: Format | None = None,
) -> None:
    """One typed cell: text stays text, numbers/dates/booleans keep their types."""
    if value is None:
        sheet.write_blank(row, col, None, fmt)
    elif isinstance(value, bool):
        sheet.write_boolean(row, col, value, fmt)
    elif isinstance(value, int | float):
        sheet.write_number(row, col, value, fmt)
    elif isinstance(value, dt.datetime):
        sheet.write_datetime(row, col, local_time(value), fmt or formats.datetime)
    elif isinstance(value, dt.date):
        sheet.write_datetime(row, col, value, fmt or formats.date)
    else:
        text = str(value)[:XLSX_MAX_TEXT]
        sheet.write_string(row, col, text, formats.quoted if formula_like(text) else fmt)


def write_row(
    sheet: Worksheet, row: int, values: Sequence[Any], formats: CellFormats, col: int = 0
) -> None:
    for offset, value in enumerate(values):
        write_cell(sheet, row, col + offset, value, formats)


def write_header(
    sheet: Worksheet,
    row: int,
    titles: Sequence[str],
    widths: Sequence[float],
    formats: CellFormats,
    *,
    freeze: bool = True,
) -> None:
    """A header row with column widths; `freeze` keeps it in view while scrolling."""
    for col, (title, width) in enumerate(zip(titles, widths, strict=True)):
        sheet.set_column(col, col, width)
        sheet.write_string(row, col, title, formats.header)
    if freeze:
        sheet.freeze_panes(row + 1, 0)


def csv_cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return csv_safe(value)
    return "" if value is None else value


async def _step(chunks: AsyncIterator[T]) -> T:
    return await anext(chunks)


def chunks_in_thread(chunks: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> Iterator[T]:
    """Iterate an async iterator from a worker thread, each step run on `loop`.

    File writers (xlsxwriter, fpdf2, csv) are synchronous and CPU-bound: they run in a thread
    so the event loop, shared with other actors and the heartbeat, stays responsive, and pull
    their rows chunk by chunk from queries running on that loop. The next chunk is fetched
    while the writer works on the current one (two chunks in memory at most).
    """
    pending: Future[T] = asyncio.run_coroutine_threadsafe(_step(chunks), loop)
    try:
        while True:
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = asyncio.run_coroutine_threadsafe(_step(chunks), loop)
            yield item
    finally:
        pending.cancel()


async def write_in_thread(writer: Callable[[Iterator[T]], Any], chunks: AsyncIterator[T]) -> Any:
    """Run `writer(rows)` in a thread, fed from `chunks` on this loop."""
    loop = asyncio.get_running_loop()
    return await asyncio.to_thread(writer, chunks_in_thread(chunks, loop))


_END = object()


async def iterate_in_own_thread(factory: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Build and step a synchronous iterator in one dedicated thread (file parsers).

    The parser's CPU work stays off the event loop, and always on the same thread: native
    readers (calamine) may refuse to be touched from another thread than their own.
    """
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-reader") as executor:
        iterator = await loop.run_in_executor(executor, factory)
        while (item := await loop.run_in_executor(executor, next, iterator, _END)) is not _END:
            yield item  # type: ignore[misc]
