"""Reports end to end: real workers render them, real S3 stores them, the link works over HTTP."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from tests.conftest import wait_for_task
from tests.factories import add_codes, count_rows, event_types, shift_task_ru
from tests.file_factories import fetch, read_xlsx, xlsx_member, xlsx_members

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("workers")]

NOMENCLATURE = "Молоко ультрапастеризованное 3,2% «Домик»"
CODES = [f"КОД-{i:04d}" for i in range(120)]
AGGREGATED = CODES[:84]  # 70.0%


async def _batch_with_products(client, **overrides):
    payload = shift_task_ru(
        **{
            "Номенклатура": NOMENCLATURE,
            "РабочийЦентр": "Цех розлива №2",
            "Бригада": "Бригада Иванова",
            **overrides,
        }
    )
    response = await client.post("/api/v1/batches", json=[payload])
    assert response.status_code == 201, response.text
    batch = response.json()[0]
    await add_codes(client, batch["id"], CODES)
    for start in range(0, len(AGGREGATED), 100):
        response = await client.post(
            f"/api/v1/batches/{batch['id']}/aggregate",
            json={"unique_codes": AGGREGATED[start : start + 100]},
        )
        assert response.status_code == 200, response.text
    return batch


async def _report(client, batch_id, fmt, **extra):
    response = await client.post(
        f"/api/v1/batches/{batch_id}/reports", json={"format": fmt, **extra}
    )
    assert response.status_code == 202, response.text
    task = await wait_for_task(client, response.json()["task_id"], timeout=60)
    assert task["status"] == "SUCCESS", task
    result = task["result"]
    assert set(result) == {"file_url", "file_name", "size", "expires_at"}, result
    content = (await fetch(result["file_url"])).content
    assert len(content) == result["size"]
    return result, content


async def test_excel_report(client):
    batch = await _batch_with_products(client)
    result, content = await _report(client, batch["id"], "excel")
    assert result["file_name"] == "batch_22222_2024-01-30_report.xlsx"

    sheets = read_xlsx(content)
    assert list(sheets) == ["Batch info", "Products", "Statistics"]
    info = {row[0]: row[1] for row in sheets["Batch info"] if row and row[0]}
    assert info["Nomenclature"] == NOMENCLATURE
    assert info["Work center"] == "Цех розлива №2"
    assert info["Team"] == "Бригада Иванова"
    assert info["Batch number"] == 22222
    assert (info["Products"], info["Aggregated"], info["Aggregation rate, %"]) == (120, 84, 70.0)

    products = sheets["Products"]
    assert products[0] == ["Unique code", "Aggregated", "Aggregated at"]
    assert [row[0] for row in products[1:]] == CODES
    assert [row[1] for row in products[1:]] == [code in AGGREGATED for code in CODES]
    assert all(row[2] for row in products[1:85])
    assert not any(row[2] for row in products[85:])

    stats = {row[0]: row[1] for row in sheets["Statistics"] if row and row[0]}
    assert (stats["Total products"], stats["Aggregated"], stats["Remaining"]) == (120, 84, 36)
    hours = [row for row in sheets["Statistics"][8:] if row and row[0]]
    assert sum(row[1] for row in hours) == 84

    sheet_xml = xlsx_member(content, "xl/worksheets/sheet2.xml")
    assert '<autoFilter ref="A1:C121"' in sheet_xml
    assert 'state="frozen"' in sheet_xml
    charts = [m for m in xlsx_members(content) if m.startswith("xl/charts/chart")]
    assert len(charts) == 2  # aggregation progress + per-hour timeline

    assert await count_rows("files", "kind = 'report' AND bucket = 'reports'") == 1
    assert "report_generated" in await event_types()


async def test_pdf_report_prints_cyrillic(client):
    batch = await _batch_with_products(client)
    _result, content = await _report(client, batch["id"], "pdf")
    assert content.startswith(b"%PDF")
    pdf = PdfReader(io.BytesIO(content))
    assert len(pdf.pages) == 5  # facts, charts, 120 products on 3 pages
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert NOMENCLATURE in text
    assert "Цех розлива №2" in text
    assert "Бригада Иванова" in text
    assert "Задание на смену 2345" in text
    assert "70.0%" in text
    assert all(code in text for code in CODES)
    assert "?" not in pdf.pages[0].extract_text()
    fonts = {
        str(font["/BaseFont"])
        for page in pdf.pages
        for font in page["/Resources"]["/Font"].values()
    }
    assert any("DejaVu" in name for name in fonts), fonts


async def test_report_link_is_mailed_when_email_given(client):
    batch = await _batch_with_products(client)
    _result, _ = await _report(client, batch["id"], "excel", email="master@plant.example")
    listing = (await client.get("/api/v1/tasks", params={"kind": "send_notification"})).json()
    assert listing["total"] == 1
    mail = await wait_for_task(client, listing["items"][0]["task_id"])
    # No SMTP_HOST in the suite: the notification is logged (transport "log").
    assert mail["result"] == {"to": "master@plant.example", "transport": "log", "delivered": False}


async def test_report_cells_are_not_formulas(client):
    batch = await _batch_with_products(
        client, Номенклатура='=HYPERLINK("http://evil.example","click")', КодЕКН="+79001234567"
    )
    _, content = await _report(client, batch["id"], "excel")
    info = {row[0]: row[1] for row in read_xlsx(content)["Batch info"] if row and row[0]}
    assert info["Nomenclature"] == '=HYPERLINK("http://evil.example","click")'
    assert info["EKN code"] == "+79001234567"
    sheet_xml = xlsx_member(content, "xl/worksheets/sheet1.xml")
    assert "<f>" not in sheet_xml  # stored as text, never as a formula
    assert 'quotePrefix="1"' in xlsx_member(content, "xl/styles.xml")


async def test_report_of_batch_without_products(client):
    response = await client.post("/api/v1/batches", json=[shift_task_ru(number=5)])
    batch = response.json()[0]
    _, content = await _report(client, batch["id"], "pdf")
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)
    assert "No products aggregated yet" in text
    assert "no products yet" in text
