"""The Excel batch report: "Batch info", "Products" (every code) and "Statistics" with charts.

Written by xlsxwriter in constant-memory mode from a stream of product chunks, so a batch
of any size costs the same memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from zoneinfo import ZoneInfo

from xlsxwriter import Workbook
from xlsxwriter.worksheet import Worksheet

from app.reports.schemas import ProductRow, ReportData
from app.reports.tabular import (
    CellFormats,
    formula_like,
    new_workbook,
    write_cell,
    write_header,
    write_row,
)

PRODUCT_COLUMNS = ("Unique code", "Aggregated", "Aggregated at")
PRODUCT_WIDTHS = (40, 12, 20)


def write_excel_report(path: str, data: ReportData, products: Iterator[list[ProductRow]]) -> int:
    """Write the workbook to `path`; returns the number of product rows."""
    workbook = new_workbook(path)
    formats = CellFormats(workbook)
    # Sheets are created first so they appear in this order; each is then written top-down.
    info = workbook.add_worksheet("Batch info")
    sheet = workbook.add_worksheet("Products")
    stats = workbook.add_worksheet("Statistics")

    info.set_column(0, 0, 26)
    info.set_column(1, 1, 60)
    b = data.batch
    info.write_string(0, 0, f"Batch {b.batch_number} of {b.batch_date.isoformat()}", formats.title)
    for row, (label, value) in enumerate(data.info(), start=2):
        info.write_string(row, 0, label, formats.label)
        write_cell(info, row, 1, value, formats)

    write_header(sheet, 0, PRODUCT_COLUMNS, PRODUCT_WIDTHS, formats)
    count = 0
    # The one loop that sees every product: direct typed writes, the zone looked up once.
    zone = ZoneInfo(data.time_zone)
    for chunk in products:
        for code, aggregated, aggregated_at in chunk:
            count += 1
            sheet.write_string(count, 0, code, formats.quoted if formula_like(code) else None)
            sheet.write_boolean(count, 1, aggregated)
            if aggregated_at is not None:
                local = aggregated_at.astimezone(zone).replace(tzinfo=None)
                sheet.write_datetime(count, 2, local, formats.datetime)
    sheet.autofilter(0, 0, max(count, 1), len(PRODUCT_COLUMNS) - 1)

    _write_statistics(workbook, stats, data, formats)
    workbook.close()
    return count


def _write_statistics(
    workbook: Workbook, stats: Worksheet, data: ReportData, formats: CellFormats
) -> None:
    write_header(stats, 0, ("Metric", "Value"), (24, 14), formats, freeze=False)
    summary = [
        ("Total products", data.total),
        ("Aggregated", data.aggregated),
        ("Remaining", data.remaining),
        ("Aggregation rate, %", data.rate),
    ]
    for row, (label, value) in enumerate(summary, start=1):
        stats.write_string(row, 0, label)
        write_cell(stats, row, 1, value, formats, formats.percent if row == 4 else None)

    progress = workbook.add_chart({"type": "doughnut"})
    progress.add_series(
        {
            "name": "Aggregation progress",
            "categories": ["Statistics", 2, 0, 3, 0],
            "values": ["Statistics", 2, 1, 3, 1],
            "points": [{"fill": {"color": "#2E7D32"}}, {"fill": {"color": "#CFD8DC"}}],
            "data_labels": {"percentage": True},
        }
    )
    progress.set_title({"name": f"Aggregated: {data.rate:.1f}%"})
    stats.insert_chart(0, 4, progress, {"x_scale": 0.9, "y_scale": 0.9})

    first = 7  # the per-hour table starts below the summary
    timezone = data.time_zone
    stats.write_string(first - 1, 0, f"Aggregated per hour ({timezone})", formats.label)
    write_header(
        stats, first, ("Hour", "Aggregated", "Cumulative"), (24, 14, 14), formats, freeze=False
    )
    cumulative = 0
    for offset, (hour, aggregated) in enumerate(data.timeline, start=1):
        cumulative += aggregated
        write_row(stats, first + offset, (hour, aggregated, cumulative), formats)
    if not data.timeline:
        stats.write_string(first + 1, 0, "No products aggregated yet")
        return
    last = first + len(data.timeline)
    per_hour = workbook.add_chart({"type": "column"})
    per_hour.add_series(
        {
            "name": "Aggregated per hour",
            "categories": ["Statistics", first + 1, 0, last, 0],
            "values": ["Statistics", first + 1, 1, last, 1],
            "fill": {"color": "#1565C0"},
        }
    )
    cumulative_line = workbook.add_chart({"type": "line"})
    cumulative_line.add_series(
        {
            "name": "Cumulative",
            "categories": ["Statistics", first + 1, 0, last, 0],
            "values": ["Statistics", first + 1, 2, last, 2],
            "y2_axis": True,
            "line": {"color": "#EF6C00", "width": 2},
        }
    )
    per_hour.combine(cumulative_line)
    per_hour.set_title({"name": "Aggregation timeline"})
    per_hour.set_x_axis(
        {"name": f"Hour ({timezone})", "date_axis": False, "num_format": "dd.mm hh:mm"}
    )
    per_hour.set_y_axis({"name": "Products per hour", "major_gridlines": {"visible": True}})
    cumulative_line.set_y2_axis({"name": "Cumulative"})
    per_hour.set_legend({"position": "bottom"})
    per_hour.set_size({"width": 720, "height": 360})
    stats.insert_chart(first, 4, per_hour)
