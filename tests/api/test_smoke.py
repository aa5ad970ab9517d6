from __future__ import annotations

from tests.factories import shift_task_ru


async def test_health(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "0.1.0"}


async def test_ingest_russian_payload(client):
    response = await client.post("/api/v1/batches", json=[shift_task_ru()])
    assert response.status_code == 201, response.text
    assert response.json()[0]["batch_number"] == 22222
