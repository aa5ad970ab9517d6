"""Examples a user can send as they are: what 1C and the other clients really send.

Swagger UI offers them in "Try it out" and schemathesis sends every one of them in its
explicit phase (tests/api/test_contract.py), so each must be valid against its schema and
accepted by the service; tests/unit/test_openapi.py checks the first against the document.
"""

from __future__ import annotations

from typing import Any

from app.models import TaskStatus

# A shift task exactly as 1C sends it (the feed of the specification).
SHIFT_TASK_1C: dict[str, Any] = {
    "СтатусЗакрытия": False,
    "ПредставлениеЗаданияНаСмену": "Задание на смену 2345",
    "РабочийЦентр": "Т2",
    "Смена": "1",
    "Бригада": "Бригада №4",
    "НомерПартии": 22222,
    "ДатаПартии": "2024-01-30",
    "Номенклатура": "Какая то номенклатура",
    "КодЕКН": "456678",
    "ИдентификаторРЦ": "A",
    "ДатаВремяНачалаСмены": "2024-01-30T20:00:00+05:00",
    "ДатаВремяОкончанияСмены": "2024-01-31T08:00:00+05:00",
}
SHIFT_TASK_EN: dict[str, Any] = {
    "is_closed": False,
    "task_description": "Задание на смену 2346",
    "work_center": "Т2",
    "work_center_identifier": "A",
    "shift": "2",
    "team": "Бригада №5",
    "batch_number": 22223,
    "batch_date": "2024-01-31",
    "nomenclature": "Какая то номенклатура",
    "ekn_code": "456678",
    "shift_start": "2024-01-31T08:00:00+05:00",
    "shift_end": "2024-01-31T20:00:00+05:00",
}

# GS1 DataMatrix marking codes ("Честный знак"): (01) GTIN-14, then (21) a 13-character
# serial. The aggregation examples name codes no other example registers, so sending them
# answers a 404 and never aggregates (or refuses) a code of another example.
CODES = ("0104607097380151215QbagCx7Nd2Xw", "0104607097380151215QbagCx7Nd2Xx")
OTHER_CODES = ("0104607097380168217Hfk3LmP0aQzR", "0104607097380168217Hfk3LmP0aQzS")
WEBHOOK_URL = "https://erp.example.com/hooks/production"


def _named(**examples: tuple[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {"summary": summary, "value": value} for name, (summary, value) in examples.items()
    }


# (method, path) -> named request body examples.
BODY_EXAMPLES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("post", "/api/v1/batches"): _named(
        feed_1c=("A shift task as 1C sends it (Russian keys)", [SHIFT_TASK_1C]),
        english=("The same fields under English keys", [SHIFT_TASK_EN]),
    ),
    ("patch", "/api/v1/batches/{batch_id}"): _named(
        team=("Another team takes the shift", {"Бригада": "Бригада №5"}),
        shift_end=("The shift runs longer", {"shift_end": "2024-01-31T09:00:00+05:00"}),
    ),
    ("post", "/api/v1/products"): _named(
        one=("One code, its batch by id", {"unique_code": CODES[0], "batch_id": 1}),
        one_1c=(
            "One code, its batch by number and date (1C keys)",
            {"УникальныйКодПродукта": CODES[1], "НомерПартии": 22222, "ДатаПартии": "2024-01-30"},
        ),
        bulk=(
            "Codes in bulk (up to 100,000; existing codes are skipped)",
            [{"unique_code": code, "batch_id": 1} for code in CODES],
        ),
    ),
    ("post", "/api/v1/batches/{batch_id}/aggregate"): _named(
        one=("One code -> the product", {"unique_code": OTHER_CODES[0]}),
        many=("Up to 100 codes -> a summary", {"unique_codes": list(OTHER_CODES)}),
    ),
    ("post", "/api/v1/batches/{batch_id}/aggregate-async"): _named(
        codes=("Any number of codes, in the background", {"unique_codes": list(OTHER_CODES)}),
    ),
    ("post", "/api/v1/products/batches/{batch_id}/aggregate"): _named(
        codes=("Up to 100 codes -> a summary with `success`", {"unique_codes": list(OTHER_CODES)}),
    ),
    ("post", "/api/v1/analytics/compare-batches"): _named(
        two=("Two batches side by side", {"batch_ids": [1, 2]}),
    ),
    ("post", "/api/v1/webhooks"): _named(
        erp=(
            "The ERP wants closed batches and finished imports",
            {
                "url": WEBHOOK_URL,
                "events": ["batch_closed", "import_completed"],
                "secret_key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "retry_count": 3,
                "timeout": 10,
            },
        ),
        minimal=(
            "Only what is required",
            {"url": WEBHOOK_URL, "events": ["batch_created"], "secret_key": "s3cr3t-shared-key"},
        ),
    ),
    ("patch", "/api/v1/webhooks/{webhook_id}"): _named(
        rotate=("Rotate the signing key", {"secret_key": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}),
        reactivate=("Deliver again after a deactivation", {"is_active": True}),
    ),
    ("post", "/api/v1/batches/{batch_id}/reports"): _named(
        excel=("An Excel workbook", {"format": "excel"}),
        pdf_mail=("A PDF, mailed when ready", {"format": "pdf", "email": "shift.lead@example.com"}),
    ),
    ("post", "/api/v1/batches/export"): _named(
        january=(
            "Closed batches of January as CSV",
            {
                "format": "csv",
                "filters": {
                    "is_closed": True,
                    "batch_date_from": "2024-01-01",
                    "batch_date_to": "2024-01-31",
                },
            },
        ),
        all_excel=("Every batch as an Excel workbook", {"format": "excel"}),
    ),
    ("post", "/api/v1/notifications/test"): _named(
        mail=(
            "Check that mail reaches the shift lead",
            {"email": "shift.lead@example.com", "message": "Проверка уведомлений"},
        ),
    ),
}

# Query parameter name -> an example; (path, name) where one name means another thing.
PARAMETER_EXAMPLES: dict[str, Any] = {
    "is_closed": False,
    "batch_number": 22222,
    "batch_date": "2024-01-30",
    "batch_date_from": "2024-01-01",
    "batch_date_to": "2024-01-31",
    "work_center_id": 1,
    "shift": "1",
    "nomenclature": "Какая то номенклатура",
    "batch_id": 1,
    "is_aggregated": False,
    "unique_code": CODES[0],
    "on_conflict": "update",
    "status": TaskStatus.SUCCESS.value,
    "kind": "aggregate_products",
    "is_active": True,
    "event": "batch_closed",
}
PATH_PARAMETER_EXAMPLES: dict[tuple[str, str], Any] = {
    ("/api/v1/webhooks/{webhook_id}/deliveries", "status"): "failed",
}
