"""The PDF batch report (fpdf2): batch facts, charts drawn with fpdf2 primitives, product table.

Page 1 holds the batch facts, page 2 the aggregation progress (a donut and a bar) and the
per-hour timeline (bars with a cumulative line), then the product table follows, paginated
with its header repeated on every page. Text is set in DejaVu Sans (shipped in fonts/), so
Cyrillic nomenclature, work centers and teams print as written.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from app.reports.schemas import ProductRow, ReportData
from app.reports.tabular import local_time

FONT_DIR: Final = Path(__file__).parent / "fonts"
FONT: Final = "DejaVu"
# Past this many lines a printed table helps nobody; the Excel report lists every code.
MAX_PDF_PRODUCTS: Final = 20_000

MARGIN: Final = 15.0
ROW_HEIGHT: Final = 5.6
GREEN: Final = (46, 125, 50)
GREY: Final = (207, 216, 220)
BLUE: Final = (21, 101, 192)
ORANGE: Final = (239, 108, 0)
HEADER_FILL: Final = (221, 230, 240)
ZEBRA_FILL: Final = (245, 247, 250)
PRODUCT_COLUMNS: Final = (
    ("#", 16.0, "R"),
    ("Unique code", 94.0, "L"),
    ("Aggregated", 26.0, "C"),
    ("Aggregated at (local)", 44.0, "L"),
)


def display(value: object) -> str:
    """A fact as printed: local times, ISO dates, a dash for nothing."""
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        return local_time(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def nice_ceiling(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above `value`: round axis maxima."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


class ReportPdf(FPDF):
    def __init__(self, title: str, subtitle: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.add_font(FONT, "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.report_title = title
        self.subtitle = subtitle
        self.set_margins(MARGIN, MARGIN + 6, MARGIN)
        self.set_auto_page_break(True, margin=MARGIN)
        self.alias_nb_pages()
        self.set_title(title)
        self.set_creator("Production Control")
        self.set_font(FONT, "", 9)

    @property
    def content_width(self) -> float:
        return self.w - 2 * MARGIN

    def header(self) -> None:
        self.set_font(FONT, "", 8)
        self.set_text_color(100)
        self.set_xy(MARGIN, 10)
        self.cell(self.content_width / 2, 5, self.report_title)
        self.cell(self.content_width / 2, 5, self.subtitle, align="R")
        self.set_draw_color(180)
        self.line(MARGIN, 16, self.w - MARGIN, 16)
        self.set_text_color(0)
        self.set_xy(MARGIN, MARGIN + 6)

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font(FONT, "", 8)
        self.set_text_color(100)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)

    def heading(self, text: str, size: float = 13) -> None:
        self.set_font(FONT, "B", size)
        self.cell(0, 9, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 9)

    # -- batch facts ---------------------------------------------------------------------

    def facts(self, rows: Sequence[tuple[str, object]]) -> None:
        self.set_draw_color(200)
        with self.table(
            col_widths=(55, self.content_width - 55),
            first_row_as_headings=False,
            line_height=6,
            text_align=("LEFT", "LEFT"),
            borders_layout="HORIZONTAL_LINES",
        ) as table:
            for label, value in rows:
                row = table.row()
                self.set_font(FONT, "B", 9)
                row.cell(label)
                self.set_font(FONT, "", 9)
                row.cell(display(value))

    # -- charts --------------------------------------------------------------------------

    def progress_chart(self, data: ReportData) -> None:
        """A donut of aggregated vs remaining, with a legend and a full-width progress bar."""
        top = self.get_y()
        size = 52.0
        cx, cy, radius = MARGIN + size / 2, top + size / 2, size / 2
        self.set_fill_color(*GREY)
        self.ellipse(MARGIN, top, size, size, style="F")
        share = data.aggregated / data.total if data.total else 0.0
        if share >= 1.0:
            self.set_fill_color(*GREEN)
            self.ellipse(MARGIN, top, size, size, style="F")
        elif share > 0:
            # A pie slice from 12 o'clock, clockwise, as a polygon (exact at any share).
            steps = max(8, int(180 * share))
            points = [(cx, cy)]
            for i in range(steps + 1):
                angle = -math.pi / 2 + 2 * math.pi * share * i / steps
                points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
            self.set_fill_color(*GREEN)
            self.polygon(points, style="F")
        hole = size * 0.56
        self.set_fill_color(255)
        self.ellipse(cx - hole / 2, cy - hole / 2, hole, hole, style="F")
        self.set_font(FONT, "B", 14)
        self.set_xy(cx - hole / 2, cy - 4)
        self.cell(hole, 8, f"{data.rate:.1f}%", align="C")

        legend_x = MARGIN + size + 12
        self.set_xy(legend_x, top + 8)
        for color, label, value in (
            (GREEN, "Aggregated", data.aggregated),
            (GREY, "Remaining", data.remaining),
        ):
            self.set_fill_color(*color)
            self.rect(self.get_x(), self.get_y() + 1.2, 5, 5, style="F")
            self.set_x(self.get_x() + 8)
            self.set_font(FONT, "", 11)
            self.cell(40, 7.5, label)
            self.set_font(FONT, "B", 11)
            self.cell(30, 7.5, f"{value:,}".replace(",", " "), align="R")
            self.set_xy(legend_x, self.get_y() + 10)
        self.set_font(FONT, "", 11)
        self.cell(48, 7.5, "Total products")
        self.set_font(FONT, "B", 11)
        self.cell(30, 7.5, f"{data.total:,}".replace(",", " "), align="R")

        bar_y = top + size + 8
        self.set_fill_color(*GREY)
        self.rect(MARGIN, bar_y, self.content_width, 7, style="F")
        if share > 0:
            self.set_fill_color(*GREEN)
            self.rect(MARGIN, bar_y, self.content_width * min(share, 1.0), 7, style="F")
        self.set_draw_color(120)
        self.rect(MARGIN, bar_y, self.content_width, 7, style="D")
        self.set_font(FONT, "", 8)
        self.set_xy(MARGIN, bar_y + 7.5)
        self.cell(self.content_width / 2, 5, "0%")
        self.cell(self.content_width / 2, 5, "100%", align="R")
        self.set_xy(MARGIN, bar_y + 16)
        self.set_font(FONT, "", 9)

    def timeline_chart(self, data: ReportData) -> None:
        """Products aggregated per hour (bars, left axis) and the running total (line, right)."""
        if not data.timeline:
            self.set_draw_color(180)
            self.set_font(FONT, "", 10)
            self.cell(
                0,
                20,
                "No products aggregated yet",
                border=1,
                align="C",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
            return
        left, top = MARGIN + 12, self.get_y() + 4
        width, height = self.content_width - 24, 70.0
        bottom = top + height
        counts = [count for _, count in data.timeline]
        y_max = nice_ceiling(max(counts))
        cumulative_max = nice_ceiling(sum(counts))

        self.set_font(FONT, "", 7)
        self.set_line_width(0.1)
        for tick in range(6):
            y = bottom - height * tick / 5
            self.set_draw_color(225)
            self.line(left, y, left + width, y)
            self.set_text_color(60)
            self.set_xy(left - 12, y - 2)
            self.cell(11, 4, _short_number(y_max * tick / 5), align="R")
            self.set_xy(left + width + 1, y - 2)
            self.set_text_color(*ORANGE)
            self.cell(11, 4, _short_number(cumulative_max * tick / 5))
        self.set_text_color(0)

        slot = width / len(counts)
        bar = slot * 0.7
        self.set_fill_color(*BLUE)
        for index, count in enumerate(counts):
            bar_height = height * count / y_max
            self.rect(
                left + index * slot + (slot - bar) / 2,
                bottom - bar_height,
                bar,
                bar_height,
                style="F",
            )

        running = 0
        points = []
        for index, count in enumerate(counts):
            running += count
            points.append((left + (index + 0.5) * slot, bottom - height * running / cumulative_max))
        self.set_draw_color(*ORANGE)
        self.set_line_width(0.6)
        if len(points) > 1:
            self.polyline(points)
        for x, y in points if len(points) <= 60 else ():
            self.set_fill_color(*ORANGE)
            self.ellipse(x - 0.8, y - 0.8, 1.6, 1.6, style="F")

        self.set_line_width(0.2)
        self.set_draw_color(80)
        self.line(left, bottom, left + width, bottom)
        self.line(left, top, left, bottom)
        self.line(left + width, top, left + width, bottom)

        # Hour labels, rotated, thinned so they never overlap.
        self.set_font(FONT, "", 6.5)
        every = max(1, math.ceil(len(counts) * 3.2 / width))
        label_bottom = bottom
        for index, (hour, _) in enumerate(data.timeline):
            if index % every:
                continue
            label = local_time(hour).strftime("%d.%m %H:00")
            x = left + (index + 0.5) * slot + 1
            y = bottom + 1 + self.get_string_width(label)
            label_bottom = max(label_bottom, y)
            with self.rotation(90, x, y):
                self.text(x, y, label)

        legend_y = label_bottom + 3
        self.set_font(FONT, "", 8)
        self.set_fill_color(*BLUE)
        self.rect(left, legend_y + 1, 4, 3, style="F")
        self.set_xy(left + 5, legend_y)
        self.cell(45, 5, "Aggregated in the hour (left)")
        self.set_draw_color(*ORANGE)
        self.set_line_width(0.6)
        self.line(left + 55, legend_y + 2.5, left + 60, legend_y + 2.5)
        self.set_line_width(0.2)
        self.set_xy(left + 61, legend_y)
        self.cell(50, 5, "Cumulative (right)")
        self.set_xy(MARGIN, legend_y + 8)
        self.set_font(FONT, "", 9)

    # -- product table -------------------------------------------------------------------

    def product_header(self) -> None:
        self.set_font(FONT, "B", 8.5)
        self.set_fill_color(*HEADER_FILL)
        self.set_draw_color(170)
        for title, width, align in PRODUCT_COLUMNS:
            self.cell(width, ROW_HEIGHT + 0.6, title, border=1, align=align, fill=True)
        self.ln()
        self.set_font(FONT, "", 8.5)

    def product_row(self, number: int, row: ProductRow) -> None:
        if self.will_page_break(ROW_HEIGHT):
            self.add_page()
            self.product_header()
        code, aggregated, aggregated_at = row
        if self.get_string_width(code) > PRODUCT_COLUMNS[1][1] - 2:
            while code and self.get_string_width(code + "…") > PRODUCT_COLUMNS[1][1] - 2:
                code = code[:-1]
            code += "…"
        values = (str(number), code, "Yes" if aggregated else "No", display(aggregated_at))
        fill = number % 2 == 0
        self.set_fill_color(*ZEBRA_FILL)
        for value, (_, width, align) in zip(values, PRODUCT_COLUMNS, strict=True):
            self.cell(width, ROW_HEIGHT, value, border="B", align=align, fill=fill)
        self.ln()


def _short_number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def write_pdf_report(path: str, data: ReportData, products: Iterator[list[ProductRow]]) -> int:
    """Write the PDF to `path`; returns the number of product rows printed."""
    b = data.batch
    title = f"Batch {b.batch_number} of {b.batch_date.isoformat()}"
    pdf = ReportPdf(
        f"Production Control — batch report: {title}",
        f"Generated {display(data.generated_at)} ({data.time_zone})",
    )
    pdf.add_page()
    pdf.heading(f"Batch report: {title}", 16)
    pdf.set_font(FONT, "", 10)
    pdf.multi_cell(0, 6, b.nomenclature, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.facts(data.info())

    pdf.add_page()
    pdf.heading("Aggregation progress")
    pdf.progress_chart(data)
    pdf.heading(f"Aggregated per hour ({data.time_zone})")
    pdf.timeline_chart(data)

    pdf.add_page()
    shown = min(data.total, MAX_PDF_PRODUCTS)
    pdf.heading(f"Products ({data.total:,})".replace(",", " "))
    if shown < data.total:
        pdf.set_font(FONT, "", 9)
        pdf.multi_cell(
            0,
            5,
            f"The first {shown:,} of {data.total:,} products are listed; the Excel report lists "
            "every product.",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
    pdf.product_header()
    count = 0
    for chunk in products:
        for row in chunk:
            if count >= MAX_PDF_PRODUCTS:
                break
            count += 1
            pdf.product_row(count, row)
    if count == 0:
        pdf.cell(0, 8, "This batch has no products yet.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.output(path)
    return count
