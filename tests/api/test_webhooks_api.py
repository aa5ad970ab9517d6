"""Webhook subscriptions over HTTP: CRUD, write-only secret, bad input, delivery log, fan-out."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select

from app.config import get_settings
from app.db import transaction
from app.models import OutboxMessage, WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.webhooks.delivery import BATCH_SIZE
from tests.factories import create_batch, shift_task_en

WEBHOOKS = "/api/v1/webhooks"


def subscription(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "url": "https://erp.example.com/hooks",
        "events": ["batch_created", "batch_closed"],
        "secret_key": "s3cret",
    }
    body.update(overrides)
    return body


async def create_webhook(client: Any, **overrides: Any) -> dict[str, Any]:
    response = await client.post(WEBHOOKS, json=subscription(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def count(model: Any) -> int:
    async with transaction() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def add_delivery(
    webhook_id: int, status: str, event: str = "batch_created", **kw: Any
) -> int:
    """A delivery row as the worker leaves it (no message queued)."""
    async with transaction() as session:
        event_id = uuid.uuid4()
        delivery = WebhookDelivery(
            subscription_id=webhook_id,
            event_id=event_id,
            event_type=event,
            payload={"id": str(event_id), "event": event, "created_at": "x", "data": {}},
            status=status,
            attempts=kw.pop("attempts", 1),
            **kw,
        )
        session.add(delivery)
        await session.flush()
        if delivery.attempts:
            session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    attempt=1,
                    status="success" if status == "success" else "failed",
                    response_status=200 if status == "success" else 500,
                    response_body="body",
                    error_message=None if status == "success" else "HTTP 500",
                    duration_ms=12.5,
                )
            )
        return delivery.id


async def test_create_get_list_never_return_the_secret(client):
    created = await create_webhook(client)
    assert created["retry_count"] == 3
    assert created["timeout"] == 10
    assert created["is_active"] is True
    assert created["events"] == ["batch_created", "batch_closed"]
    assert created["failure_streak"] == 0
    assert created["disabled_reason"] is None
    assert "secret_key" not in created

    fetched = (await client.get(f"{WEBHOOKS}/{created['id']}")).json()
    assert fetched == created
    listing = (await client.get(WEBHOOKS)).json()
    assert set(listing) == {"items", "total"}
    assert listing["total"] == 1
    assert listing["items"] == [created]
    for response in (
        await client.get(f"{WEBHOOKS}/{created['id']}"),
        await client.get(WEBHOOKS),
        await client.get("/schema/openapi.json"),
    ):
        assert "s3cret" not in response.text
    schema = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    out = next(v for k, v in schema.items() if k.endswith("WebhookOut"))
    assert "secret_key" not in out["properties"]


async def test_list_filters_and_pagination(client):
    for i in range(5):
        await create_webhook(
            client,
            url=f"https://h{i}.example.com/",
            events=["product_aggregated"] if i % 2 else ["batch_created"],
            is_active=i != 4,
        )
    page = (await client.get(WEBHOOKS, params={"offset": 1, "limit": 2})).json()
    assert page["total"] == 5
    assert [w["url"] for w in page["items"]] == [
        "https://h1.example.com/",
        "https://h2.example.com/",
    ]
    active = (await client.get(WEBHOOKS, params={"is_active": "false"})).json()
    assert [w["url"] for w in active["items"]] == ["https://h4.example.com/"]
    aggregated = (await client.get(WEBHOOKS, params={"event": "product_aggregated"})).json()
    assert aggregated["total"] == 2
    for params in ({"limit": 101}, {"limit": 0}, {"offset": -1}, {"event": "nope"}):
        response = await client.get(WEBHOOKS, params=params)
        assert response.status_code == 422, (params, response.text)


async def test_patch_rotates_secret_and_reenables(client):
    created = await create_webhook(client, is_active=False)
    response = await client.patch(
        f"{WEBHOOKS}/{created['id']}",
        json={"secret_key": "rotated", "events": ["batch_updated"], "timeout": 2.5},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "secret_key" not in body
    assert body["events"] == ["batch_updated"]
    assert body["timeout"] == 2.5
    async with transaction() as session:
        stored = await session.get(WebhookSubscription, created["id"])
        assert stored is not None
        assert stored.secret_key == "rotated"
        stored.failure_streak = 20
        stored.disabled_reason = "Deactivated after 20 consecutive failed delivery attempts"
    response = await client.patch(f"{WEBHOOKS}/{created['id']}", json={"is_active": True})
    assert response.status_code == 200
    assert response.json()["is_active"] is True
    assert response.json()["failure_streak"] == 0
    assert response.json()["disabled_reason"] is None


async def test_delete_also_with_delivery_history(client):
    kept = await create_webhook(client)
    doomed = await create_webhook(client)
    await add_delivery(doomed["id"], "success")
    await add_delivery(kept["id"], "failed")
    response = await client.delete(f"{WEBHOOKS}/{doomed['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"{WEBHOOKS}/{doomed['id']}")).status_code == 404
    assert (await client.get(f"{WEBHOOKS}/{doomed['id']}/deliveries")).status_code == 404
    assert (await client.delete(f"{WEBHOOKS}/{doomed['id']}")).status_code == 404
    # History goes with the subscription (documented); the other one's log is untouched.
    assert await count(WebhookDelivery) == 1
    assert await count(WebhookAttempt) == 1


BAD_CREATE = [
    ({"url": "ftp://example.com/x"}, ["body", "url"]),
    ({"url": "javascript:alert(1)"}, ["body", "url"]),
    ({"url": "example.com/hook"}, ["body", "url"]),
    ({"url": "http:///no-host"}, ["body", "url"]),
    ({"url": "https://user:pw@example.com/"}, ["body", "url"]),
    ({"url": "https://token@example.com/"}, ["body", "url"]),
    ({"url": "https://example.com:99999/"}, ["body", "url"]),
    ({"url": " https://example.com/"}, ["body", "url"]),
    ({"url": ""}, ["body", "url"]),
    ({"events": ["batch_created", "batch_deleted"]}, ["body", "events", 1]),
    ({"events": ["ping"]}, ["body", "events", 0]),
    ({"events": []}, ["body", "events"]),
    ({"events": "batch_created"}, ["body", "events"]),
    ({"retry_count": -1}, ["body", "retry_count"]),
    ({"retry_count": 11}, ["body", "retry_count"]),
    ({"timeout": 0}, ["body", "timeout"]),
    ({"timeout": 61}, ["body", "timeout"]),
    ({"secret_key": ""}, ["body", "secret_key"]),
    ({"secret_key": "   "}, ["body", "secret_key"]),
    ({"secret_key": "whsec_not base64!"}, ["body", "secret_key"]),
    ({"secret_key": None}, ["body", "secret_key"]),
    ({"is_active": "yes"}, ["body", "is_active"]),
    ({"secret": "x"}, ["body", "secret"]),
]


@pytest.mark.parametrize(("change", "loc"), BAD_CREATE)
async def test_bad_create_is_422_and_writes_nothing(client, change, loc):
    response = await client.post(WEBHOOKS, json=subscription(**change))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"][0]["loc"] == loc, problem
    assert await count(WebhookSubscription) == 0


async def test_missing_fields_and_non_object_bodies(client):
    for body, loc in (
        ({"url": "https://example.com", "events": ["batch_created"]}, ["body", "secret_key"]),
        ({"events": ["batch_created"], "secret_key": "k"}, ["body", "url"]),
        ([subscription()], ["body"]),
    ):
        response = await client.post(WEBHOOKS, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == loc
    assert await count(WebhookSubscription) == 0


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"url": "file:///etc/passwd"}, ["body", "url"]),
        ({"events": ["nope"]}, ["body", "events", 0]),
        ({"secret_key": ""}, ["body", "secret_key"]),
        ({"retry_count": 100}, ["body", "retry_count"]),
        ({"timeout": -5}, ["body", "timeout"]),
        ({"url": None}, ["body", "url"]),
        ({"failure_streak": 0}, ["body", "failure_streak"]),
    ],
)
async def test_bad_patch_is_422_and_changes_nothing(client, change, loc):
    created = await create_webhook(client)
    response = await client.patch(f"{WEBHOOKS}/{created['id']}", json=change)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc
    assert (await client.get(f"{WEBHOOKS}/{created['id']}")).json() == created


async def test_path_ids_and_unknown_webhooks(client):
    for path in (f"{WEBHOOKS}/0", f"{WEBHOOKS}/2147483648", f"{WEBHOOKS}/-1/deliveries"):
        assert (await client.get(path)).status_code == 422, path
    assert (await client.get(f"{WEBHOOKS}/7")).json()["detail"] == "Webhook not found (id 7)"
    assert (await client.patch(f"{WEBHOOKS}/7", json={})).status_code == 404
    assert (await client.delete(f"{WEBHOOKS}/7")).json()["detail"] == "Webhook not found (id 7)"
    assert (await client.post(f"{WEBHOOKS}/7/test")).status_code == 404
    response = await client.get(f"{WEBHOOKS}/7/deliveries")
    assert response.status_code == 404
    assert response.json()["detail"] == "Webhook not found (id 7)"
    assert (await client.get(f"{WEBHOOKS}/")).status_code == 200


async def test_delivery_log_filters_and_pages(client):
    hook = await create_webhook(client)
    other = await create_webhook(client)
    ok = await add_delivery(hook["id"], "success")
    failed = await add_delivery(hook["id"], "failed", event="batch_closed")
    pending = await add_delivery(hook["id"], "pending", attempts=0)
    await add_delivery(other["id"], "success")

    url = f"{WEBHOOKS}/{hook['id']}/deliveries"
    log = (await client.get(url)).json()
    assert set(log) == {"items", "total"}
    assert log["total"] == 3
    assert [d["id"] for d in log["items"]] == [pending, failed, ok]
    first = log["items"][2]
    assert first["status"] == "success"
    assert first["webhook_id"] == hook["id"]
    assert first["attempt_log"] == [
        {
            "attempt": 1,
            "status": "success",
            "response_status": 200,
            "response_body": "body",
            "error_message": None,
            "duration_ms": 12.5,
            "created_at": first["attempt_log"][0]["created_at"],
        }
    ]
    assert log["items"][0]["attempt_log"] == []
    by_status = (await client.get(url, params={"status": "failed"})).json()
    assert [d["id"] for d in by_status["items"]] == [failed]
    by_event = (await client.get(url, params={"event": "batch_created"})).json()
    assert by_event["total"] == 2
    page = (await client.get(url, params={"offset": 1, "limit": 1})).json()
    assert page == {"items": [log["items"][1]], "total": 3}
    for params in ({"status": "done"}, {"limit": 101}):
        assert (await client.get(url, params=params)).status_code == 422


async def test_redeliver_rules(client):
    hook = await create_webhook(client)
    failed = await add_delivery(hook["id"], "failed")
    pending = await add_delivery(hook["id"], "pending", attempts=0)
    base = f"{WEBHOOKS}/{hook['id']}/deliveries"
    outbox_before = await count(OutboxMessage)

    response = await client.post(f"{base}/{failed}/redeliver")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert response.json()["attempts"] == 1
    assert await count(OutboxMessage) == outbox_before + 1

    response = await client.post(f"{base}/{pending}/redeliver")
    assert response.status_code == 409
    assert "still pending" in response.json()["detail"]
    response = await client.post(f"{base}/999/redeliver")
    assert response.status_code == 404
    assert response.json()["detail"] == f"Delivery not found (id 999, webhook {hook['id']})"
    other = await create_webhook(client)
    response = await client.post(f"{WEBHOOKS}/{other['id']}/deliveries/{failed}/redeliver")
    assert response.status_code == 404
    assert response.json()["detail"] == f"Delivery not found (id {failed}, webhook {other['id']})"

    finished = await add_delivery(hook["id"], "success")
    await client.patch(f"{WEBHOOKS}/{hook['id']}", json={"is_active": False})
    response = await client.post(f"{base}/{finished}/redeliver")
    assert response.status_code == 400
    assert "inactive" in response.json()["detail"]


async def test_test_ping_queues_a_delivery(client):
    hook = await create_webhook(client)
    response = await client.post(f"{WEBHOOKS}/{hook['id']}/test")
    assert response.status_code == 202, response.text
    delivery = response.json()
    assert delivery["event"] == "ping"
    assert delivery["status"] == "pending"
    assert delivery["payload"]["data"]["webhook_id"] == hook["id"]
    assert delivery["payload"]["id"] == delivery["event_id"]
    async with transaction() as session:
        messages = (
            (
                await session.execute(
                    select(OutboxMessage).where(OutboxMessage.event_type == "deliver_webhook")
                )
            )
            .scalars()
            .all()
        )
    assert [m.payload["args"] for m in messages] == [[delivery["id"]]]


async def wait_for_deliveries(expected: int, timeout: float = 10.0) -> list[WebhookDelivery]:
    deadline = time.monotonic() + timeout
    while True:
        async with transaction() as session:
            rows = list(
                (await session.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)))
                .scalars()
                .all()
            )
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_fan_out_matches_active_subscriptions(client):
    both = await create_webhook(client, events=["batch_created", "batch_closed"])
    created_only = await create_webhook(client, events=["batch_created"])
    await create_webhook(client, events=["batch_created"], is_active=False)
    await create_webhook(client, events=["product_aggregated"])

    batch = await create_batch(client)
    assert (await client.post(f"/api/v1/batches/{batch['id']}/close")).status_code == 200
    rows = await wait_for_deliveries(3)
    await asyncio.sleep(0.3)  # nothing more arrives
    rows = await wait_for_deliveries(3)
    pairs = sorted((r.subscription_id, r.event_type) for r in rows)
    assert pairs == [
        (both["id"], "batch_closed"),
        (both["id"], "batch_created"),
        (created_only["id"], "batch_created"),
    ]
    for row in rows:
        assert row.status == "pending"
        assert row.payload["event"] == row.event_type
        assert row.payload["id"] == str(row.event_id)
        assert row.payload["data"]["batch_id"] == batch["id"]
    created = [r for r in rows if r.event_type == "batch_created"]
    assert created[0].event_id == created[1].event_id  # one event, two subscribers


async def test_fan_out_gives_a_group_one_event_per_item_and_keeps_old_single_rows(client):
    """A group row becomes one event per item, each with its own id; a row written before
    groups ({id, event, created_at, data}) keeps its id."""
    hook = await create_webhook(client, events=["batch_created"])
    legacy_id = str(uuid.uuid4())
    async with transaction() as session:
        session.add(
            OutboxMessage(
                topic="event",
                event_type="batch_created",
                payload={
                    "id": legacy_id,
                    "event": "batch_created",
                    "created_at": "2026-01-01T00:00:00+00:00",
                    "data": {"batch_id": 0},
                },
            )
        )
    feed = await client.post("/api/v1/batches", json=[shift_task_en(1), shift_task_en(2)])
    assert feed.status_code == 201, feed.text
    rows = await wait_for_deliveries(3)
    assert {r.subscription_id for r in rows} == {hook["id"]}
    by_batch = {r.payload["data"]["batch_id"]: r for r in rows}
    assert sorted(by_batch) == sorted([0, *(b["id"] for b in feed.json())])
    assert str(by_batch[0].event_id) == legacy_id
    assert len({r.event_id for r in rows}) == 3
    for row in rows:
        assert row.payload["id"] == str(row.event_id)
        assert row.payload["event"] == "batch_created"


async def test_fan_out_sends_one_message_per_batch_of_deliveries(client):
    """A burst of events costs one deliver_webhook message per BATCH_SIZE deliveries."""
    hook = await create_webhook(client, events=["batch_created"])
    events = 2 * BATCH_SIZE + 3
    feed = [shift_task_en(number=7000 + n) for n in range(events)]
    assert (await client.post("/api/v1/batches", json=feed)).status_code == 201
    rows = await wait_for_deliveries(events)
    assert {row.subscription_id for row in rows} == {hook["id"]}
    async with transaction() as session:
        messages = (
            (
                await session.execute(
                    select(OutboxMessage.payload)
                    .where(OutboxMessage.event_type == "deliver_webhook")
                    .order_by(OutboxMessage.id)
                )
            )
            .scalars()
            .all()
        )
    assert [len(m["args"]) for m in messages] == [BATCH_SIZE, BATCH_SIZE, 3]
    assert sorted(i for m in messages for i in m["args"]) == sorted(row.id for row in rows)


@pytest.fixture
def private_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """WEBHOOK_ALLOW_PRIVATE=false, as in production (the suite runs with it on)."""
    settings = msgspec.structs.replace(get_settings(), webhook_allow_private=False)
    monkeypatch.setattr("app.webhooks.service.get_settings", lambda: settings)


@pytest.mark.usefixtures("private_refused")
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://[::ffff:10.0.0.1]/hook",
    ],
)
async def test_literal_private_addresses_are_refused_at_creation(client, url):
    response = await client.post(WEBHOOKS, json=subscription(url=url))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "url"]
    assert await count(WebhookSubscription) == 0
    hook = await create_webhook(client)
    patched = await client.patch(f"{WEBHOOKS}/{hook['id']}", json={"url": url})
    assert patched.status_code == 422, patched.text


@pytest.mark.usefixtures("private_refused")
async def test_public_literal_and_names_are_checked_at_delivery(client):
    await create_webhook(client, url="https://93.184.215.14/hook")
    await create_webhook(client, url="https://internal.example/hook")  # resolved at delivery
    assert await count(WebhookSubscription) == 2
