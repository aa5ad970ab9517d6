"""Request payloads for tests, in the shapes 1C and other clients send, and small client helpers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import text, update

from app.db import transaction
from app.models import Task
from app.outbox import outbox_events
from app.tasks.kinds import TASK_QUEUES

PROBLEM_KEYS = {"type", "title", "status", "detail"}


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


def without(payload: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in keys}


async def create_batch(client: Any, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/batches", json=[shift_task_en(**overrides)])
    assert response.status_code == 201, response.text
    return response.json()[0]


async def create_batches(client: Any, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post("/api/v1/batches", json=payloads)
    assert response.status_code == 201, response.text
    return response.json()


async def add_codes(client: Any, batch_id: int, codes: list[str]) -> None:
    response = await client.post(
        "/api/v1/products", json=[{"unique_code": c, "batch_id": batch_id} for c in codes]
    )
    assert response.status_code == 201, response.text
    assert response.json()["created"] == len(codes), response.text


async def aggregate(client: Any, batch_id: int, code: str) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/batches/{batch_id}/aggregate", json={"unique_code": code}
    )
    assert response.status_code == 200, response.text
    return response.json()


def problem(response: Any, status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem with `status` (and a field error at `loc`); returns the body."""
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].startswith("http"), body
    if status == 422:  # FastAPI's shape: the field errors, also under `errors`
        assert isinstance(body["detail"], list), body
        assert body["detail"], body
        assert body["detail"] == body["errors"], body
    else:  # a sentence starting with what failed
        assert isinstance(body["detail"], str), body
        assert body["detail"], body
    if loc is not None:
        assert body["errors"][0]["loc"] == loc, body["errors"]
        assert all({"loc", "msg", "type"} <= set(e) for e in body["errors"]), body["errors"]
    return body


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def count_rows(table: str, where: str = "TRUE") -> int:
    """Rows in a table (test-only SQL: table and condition are literals written in tests)."""
    async with transaction() as session:
        query = text(f"SELECT count(*) FROM {table} WHERE {where}")
        return int((await session.execute(query)).scalar_one())


async def event_types() -> list[str]:
    """Outbox events written so far, oldest first."""
    async with transaction() as session:
        rows = await session.execute(
            text(f"SELECT event FROM ({outbox_events()}) e ORDER BY outbox_id, n")
        )
        return list(rows.scalars().all())


async def insert_task(
    kind: str = "generate_report",
    status: str = "PENDING",
    *,
    current: int = 0,
    total: int = 0,
    **columns: Any,
) -> str:
    """A tasks row written straight to the database (no outbox message, so no worker runs it)."""
    task = Task(
        id=uuid.uuid4(),
        kind=kind,
        queue=TASK_QUEUES[kind],
        status=status,
        params={},
        progress_current=current,
        progress_total=total,
        attempts=0,
        max_attempts=4,
        cancel_requested=False,
        **columns,
    )
    async with transaction() as session:
        session.add(task)
    return str(task.id)


async def update_task(task_id: str, **columns: Any) -> None:
    async with transaction() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(**columns))
