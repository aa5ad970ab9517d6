"""Request payloads for tests, in the shapes 1C and other clients send."""

from __future__ import annotations

from typing import Any


def shift_task_ru(
    number: int = 22222, date: str = "2024-01-30", **overrides: Any
) -> dict[str, Any]:
    payload = {
        "СтатусЗакрытия": False,
        "ПредставлениеЗаданияНаСмену": "Задание на смену 2345",
        "РабочийЦентр": "Т2",
        "Смена": "1",
        "Бригада": "Бригада №4",
        "НомерПартии": number,
        "ДатаПартии": date,
        "Номенклатура": "Какая то номенклатура",
        "КодЕКН": "456678",
        "ИдентификаторРЦ": "A",
        "ДатаВремяНачалаСмены": f"{date}T20:00:00+05:00",
        "ДатаВремяОкончанияСмены": f"{date}T23:00:00+05:00",
    }
    payload.update(overrides)
    return payload


def shift_task_en(number: int = 1001, date: str = "2024-02-01", **overrides: Any) -> dict[str, Any]:
    payload = {
        "is_closed": False,
        "task_description": "Shift task",
        "work_center": "Line 1",
        "shift": "1",
        "team": "Team A",
        "batch_number": number,
        "batch_date": date,
        "nomenclature": "Widget",
        "ekn_code": "EKN-1",
        "work_center_identifier": "WC-1",
        "shift_start": f"{date}T08:00:00Z",
        "shift_end": f"{date}T20:00:00Z",
    }
    payload.update(overrides)
    return payload


async def create_batch(client: Any, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/batches", json=[shift_task_en(**overrides)])
    assert response.status_code == 201, response.text
    return response.json()[0]


async def add_codes(client: Any, batch_id: int, codes: list[str]) -> None:
    response = await client.post(
        "/api/v1/products", json=[{"unique_code": c, "batch_id": batch_id} for c in codes]
    )
    assert response.status_code == 201, response.text
    assert response.json()["created"] == len(codes), response.text
