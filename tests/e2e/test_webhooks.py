"""Webhooks end to end: a real HTTP receiver on 127.0.0.1, real workers, RabbitMQ, PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook
from yarl import URL

from app.config import get_settings
from app.db import transaction
from app.models import OutboxMessage, WebhookDelivery
from app.outbox import EVENTS, enqueue_task
from app.webhooks import delivery as webhook_delivery
from app.webhooks.delivery import (
    BATCH_SIZE,
    LEASE_MARGIN_SECONDS,
    Outcome,
    claim,
    close_client_sessions,
    deliver,
    deliver_batch,
)
from app.webhooks.ssrf import DeliveryRefused, refusal_reason, resolve_public_address
from tests.conftest import wait_for_task
from tests.factories import add_codes, create_batch, shift_task_en
from tests.file_factories import RU_HEADER, csv_bytes, ru_row, upload_import
from tests.webhook_receiver import Received, Receiver, Reply

pytestmark = pytest.mark.e2e

WEBHOOKS = "/api/v1/webhooks"
ALL_EVENTS = list(EVENTS)


@pytest.fixture(scope="module")
def server() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module", autouse=True)
async def _client_sessions(server: Receiver) -> AsyncIterator[None]:
    """The tests here that deliver in-process pool HTTP sessions on the tests' event loop:
    closed before it ends (and before the receiver stops), not left open for the garbage
    collector to report as "Unclosed client session" and "Unclosed connector"."""
    yield
    await close_client_sessions()


@pytest.fixture
def receiver(server: Receiver) -> Receiver:
    server.reset()
    return server


async def subscribe(client: Any, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "events": ALL_EVENTS, "secret_key": "s3cret", **fields}
    response = await client.post(WEBHOOKS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(client: Any, webhook_id: int, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"{WEBHOOKS}/{webhook_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def wait_until_settled(
    client: Any, webhook_id: int, count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """The delivery log once `count` deliveries exist and none is pending."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = await deliveries(client, webhook_id, limit=100)
        if len(items) >= count and all(d["status"] != "pending" for d in items):
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries not settled in {timeout}s: {items}")


def assert_signed(request: Received, secret: str, standard_key: str | bytes) -> dict[str, Any]:
    """Both signature schemes verify; returns the decoded body."""
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.header("X-Webhook-Signature") == f"sha256={expected}"
    # The reference Standard Webhooks library checks webhook-id/-timestamp/-signature.
    body = Webhook(standard_key).verify(request.body, request.headers)
    assert request.header("webhook-id") == request.header("X-Webhook-Id") == body["id"]
    assert request.header("X-Webhook-Event") == body["event"]
    assert request.header("content-type") == "application/json"
    assert list(body) == ["id", "event", "created_at", "data"]
    return body


async def test_every_event_reaches_the_receiver_signed(client, workers, receiver):
    standard_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    everything = await subscribe(client, receiver.url("/all"), secret_key=standard_secret)
    plain = await subscribe(client, receiver.url("/created"), events=["batch_created"])

    batch = await create_batch(client)  # batch_created
    response = await client.patch(f"/api/v1/batches/{batch['id']}", json={"team": "Team B"})
    assert response.status_code == 200  # batch_updated
    assert (await client.post(f"/api/v1/batches/{batch['id']}/close")).status_code == 200
    line = await create_batch(client, number=2002)
    await add_codes(client, line["id"], ["WH-1"])
    response = await client.post(
        f"/api/v1/batches/{line['id']}/aggregate", json={"unique_code": "WH-1"}
    )
    assert response.status_code == 200  # product_aggregated
    response = await client.post(f"/api/v1/batches/{line['id']}/reports", json={"format": "pdf"})
    assert response.status_code == 202, response.text
    report = await wait_for_task(client, response.json()["task_id"], timeout=60)
    assert report["status"] == "SUCCESS", report  # report_generated
    rows = csv_bytes([RU_HEADER, ru_row(3003)])
    response = await upload_import(client, "feed.csv", rows, "text/csv")
    assert response.status_code == 202, response.text
    imported = await wait_for_task(client, response.json()["task_id"], timeout=60)
    assert imported["status"] == "SUCCESS", imported  # import_completed

    # Three batches created (the import makes one); the close is also an update.
    expected = sorted([*ALL_EVENTS, "batch_created", "batch_created", "batch_updated"])
    await receiver.wait_for(len(expected), "/all")
    await asyncio.sleep(0.5)  # and nothing more
    received = receiver.requests("/all")
    bodies = [assert_signed(r, standard_secret, standard_secret) for r in received]
    assert sorted(b["event"] for b in bodies) == expected
    created_ids = {b["data"]["batch_id"] for b in bodies if b["event"] == "batch_created"}
    assert {batch["id"], line["id"]} < created_ids
    by_event = {b["event"]: b for b in bodies}
    assert by_event["batch_closed"]["data"]["is_closed"] is True
    assert by_event["product_aggregated"]["data"]["unique_codes"] == ["WH-1"]
    assert by_event["report_generated"]["data"]["batch_id"] == line["id"]
    assert by_event["report_generated"]["data"]["format"] == "pdf"
    assert by_event["import_completed"]["data"]["created"] == 1

    created = await receiver.wait_for(3, "/created")
    for request in created:
        # A plain secret: Standard Webhooks receivers use its UTF-8 bytes as the key.
        assert assert_signed(request, "s3cret", b"s3cret")["event"] == "batch_created"

    log = await wait_until_settled(client, everything["id"], len(received))
    assert {d["event"] for d in log} == set(ALL_EVENTS)
    for delivery in log:
        assert delivery["status"] == "success", delivery
        assert delivery["response_status"] == 200
        assert delivery["delivered_at"] is not None
        assert [a["status"] for a in delivery["attempt_log"]] == ["success"]
        assert delivery["attempt_log"][0]["response_body"] == "ok"
    assert len(receiver.requests("/created")) == 3  # only the events it subscribed to
    assert len(await wait_until_settled(client, plain["id"], 3)) == 3


async def test_failure_then_success_retries_with_backoff(client, workers, receiver):
    receiver.script("/flaky", Reply(500, body=b"boom"), Reply(200))
    hook = await subscribe(client, receiver.url("/flaky"), retry_count=3)
    await create_batch(client)
    first, second = await receiver.wait_for(2, "/flaky")
    assert first.header("webhook-id") == second.header("webhook-id")  # receivers dedupe on it
    minimum = get_settings().webhook_retry_base_seconds / 2  # equal jitter keeps half the step
    assert second.at - first.at >= minimum * 0.95

    [delivery] = await wait_until_settled(client, hook["id"], 1)
    assert delivery["status"] == "success"
    assert delivery["attempts"] == 2
    failed, succeeded = delivery["attempt_log"]
    assert (failed["status"], failed["response_status"], failed["response_body"]) == (
        "failed",
        500,
        "boom",
    )
    assert failed["error_message"] == "HTTP 500"
    assert failed["duration_ms"] > 0
    assert (succeeded["status"], succeeded["response_status"]) == ("success", 200)
    assert (await client.get(f"{WEBHOOKS}/{hook['id']}")).json()["failure_streak"] == 0


async def test_timeout_is_a_failed_attempt(client, workers, receiver):
    receiver.script("/slow", Reply(200, delay=3.0))
    hook = await subscribe(client, receiver.url("/slow"), retry_count=0, timeout=1)
    response = await client.post(f"{WEBHOOKS}/{hook['id']}/test")
    assert response.status_code == 202
    [delivery] = await wait_until_settled(client, hook["id"], 1)
    assert delivery["event"] == "ping"
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempt_log"]
    assert attempt["error_message"] == "Timed out after 1 s"
    assert attempt["response_status"] is None
    assert 900 <= attempt["duration_ms"] < 2500
    assert len(receiver.requests("/slow")) == 1


async def test_redeliver_sends_again_with_the_same_id(client, workers, receiver):
    receiver.script("/down", Reply(503))
    hook = await subscribe(client, receiver.url("/down"), retry_count=0)
    await create_batch(client)
    [failed] = await wait_until_settled(client, hook["id"], 1)
    assert failed["status"] == "failed"
    assert failed["error_message"] == "HTTP 503"

    url = f"{WEBHOOKS}/{hook['id']}/deliveries/{failed['id']}/redeliver"
    response = await client.post(url)
    assert response.status_code == 202
    [delivered] = await wait_until_settled(client, hook["id"], 1)
    assert delivered["status"] == "success"
    assert [a["status"] for a in delivered["attempt_log"]] == ["failed", "success"]
    assert (await client.post(url)).status_code == 202  # a successful one can be resent too
    requests = await receiver.wait_for(3, "/down")
    assert len({r.header("webhook-id") for r in requests}) == 1
    [again] = await wait_until_settled(client, hook["id"], 1)
    assert again["attempts"] == 3


async def test_failure_streak_deactivates_the_subscription(client, workers, receiver):
    limit = get_settings().webhook_failure_limit
    receiver.script("/broken", *[Reply(500)] * limit)
    hook = await subscribe(client, receiver.url("/broken"), retry_count=0, events=["batch_created"])
    feed = [shift_task_en(number=5000 + i) for i in range(limit)]
    assert (await client.post("/api/v1/batches", json=feed)).status_code == 201
    log = await wait_until_settled(client, hook["id"], limit)
    assert all(d["status"] == "failed" for d in log)

    state = (await client.get(f"{WEBHOOKS}/{hook['id']}")).json()
    assert state["is_active"] is False
    assert state["failure_streak"] == limit
    assert f"after {limit} consecutive failed delivery attempts" in state["disabled_reason"]
    assert "HTTP 500" in state["disabled_reason"]
    # Inactive: later events are not fanned out to it.
    await create_batch(client, number=9999)
    await asyncio.sleep(1.0)
    assert len(await deliveries(client, hook["id"], limit=100)) == limit

    response = await client.patch(f"{WEBHOOKS}/{hook['id']}", json={"is_active": True})
    assert response.json()["disabled_reason"] is None
    assert response.json()["failure_streak"] == 0


async def add_pending_delivery(webhook_id: int, *, overdue_seconds: float = 0.0) -> int:
    """A pending delivery with no queued message (as if the message had been lost)."""
    event_id = uuid.uuid4()
    async with transaction() as session:
        delivery = WebhookDelivery(
            subscription_id=webhook_id,
            event_id=event_id,
            event_type="batch_created",
            payload={"id": str(event_id), "event": "batch_created", "created_at": "t", "data": {}},
            status="pending",
            attempts=0,
            next_attempt_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, overdue_seconds),
        )
        session.add(delivery)
        await session.flush()
        return delivery.id


async def test_retry_sweep_delivers_what_was_lost(client, workers, receiver):
    hook = await subscribe(client, receiver.url("/lost"))
    lost = await add_pending_delivery(hook["id"], overdue_seconds=120)
    recent = await add_pending_delivery(hook["id"])  # its message may still be on the way
    async with transaction() as session:
        task = await enqueue_task(session, "retry_failed_webhooks")
    finished = await wait_for_task(client, str(task.id))
    assert finished["status"] == "SUCCESS", finished
    assert finished["result"] == {"requeued": 1, "delivery_ids": [lost]}
    [request] = await receiver.wait_for(1, "/lost")
    async with transaction() as session:
        statuses = dict(
            (await session.execute(select(WebhookDelivery.id, WebhookDelivery.status))).all()
        )
    assert statuses[lost] in ("pending", "success")
    assert statuses[recent] == "pending"
    assert request.json["event"] == "batch_created"


async def test_duplicate_messages_send_once(client, receiver):
    """Redelivered messages for one delivery: the claim lets exactly one attempt through."""
    receiver.script("/once", Reply(200, delay=0.3))
    hook = await subscribe(client, receiver.url("/once"))
    delivery_id = await add_pending_delivery(hook["id"])
    outcomes = await asyncio.gather(*(deliver(delivery_id) for _ in range(3)))
    assert sorted(o.status for o in outcomes) == ["skipped", "skipped", "success"]
    assert (await deliver(delivery_id)).status == "skipped"  # already successful
    assert len(receiver.requests("/once")) == 1


async def test_closing_the_client_sessions_closes_pooled_and_evicted_ones(
    client, receiver, monkeypatch
):
    """What a worker does at shutdown: every session of the loop's pool is closed, those
    evicted and still waiting out a request's deadline too, and the pool is gone."""
    await close_client_sessions()  # from empty: earlier tests may have pooled sessions
    hook = await subscribe(client, receiver.url("/pooled"))
    assert (await deliver(await add_pending_delivery(hook["id"]))).status == "success"
    loop = asyncio.get_running_loop()
    pool = webhook_delivery._pools[loop]
    [receivers] = pool._sessions.values()  # with a keep-alive connection to the receiver
    monkeypatch.setattr(webhook_delivery._ClientPool, "SIZE", 1)
    # A second host evicts the receiver's session.
    other = webhook_delivery._session_for(URL("http://other.invalid/hook"))
    assert not receivers.closed  # closed only after the longest request deadline
    assert len(pool._closing) == 1

    assert await close_client_sessions() == 2

    assert receivers.closed
    assert other.closed
    assert not pool._closing
    assert loop not in webhook_delivery._pools
    assert await close_client_sessions() == 0
    # A later delivery on the loop starts a new pool.
    assert (await deliver(await add_pending_delivery(hook["id"]))).status == "success"
    assert webhook_delivery._pools[loop] is not pool


async def test_redirects_are_not_followed(client, receiver):
    receiver.script("/moved", Reply(302, headers=(("Location", receiver.url("/elsewhere")),)))
    hook = await subscribe(client, receiver.url("/moved"), retry_count=0)
    outcome = await deliver(await add_pending_delivery(hook["id"]))
    assert outcome.status == "failed"
    [delivery] = await deliveries(client, hook["id"])
    assert delivery["error_message"] == "HTTP 302: redirects are not followed"
    assert receiver.requests("/elsewhere") == []


async def test_inactive_webhook_gets_no_events_but_a_ping(client, workers, receiver):
    hook = await subscribe(client, receiver.url("/off"))
    queued = await add_pending_delivery(hook["id"])
    await client.patch(f"{WEBHOOKS}/{hook['id']}", json={"is_active": False})
    assert (await deliver(queued)).status == "skipped"
    [delivery] = await deliveries(client, hook["id"])
    assert delivery["status"] == "failed"
    assert delivery["error_message"] == f"Not sent: webhook {hook['id']} is inactive"
    assert delivery["attempt_log"] == []

    response = await client.post(f"{WEBHOOKS}/{hook['id']}/test")
    assert response.status_code == 202  # a ping checks a fixed receiver before re-enabling
    [request] = await receiver.wait_for(1, "/off")
    assert request.json["event"] == "ping"
    assert request.json["data"]["webhook_id"] == hook["id"]


PUBLIC = ["93.184.216.34", "2606:4700:4700::1111"]
REFUSED = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.10": "private",
    "fd12::1": "private",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "224.0.0.251": "multicast",
    "ff02::1": "multicast",
    "169.254.169.254": "metadata",
    "fd00:ec2::254": "metadata",
    "100.100.100.200": "metadata",
    "::ffff:127.0.0.1": "loopback",
    "100.64.0.1": "non-public",
    "0.0.0.0": "unspecified",
}


@pytest.mark.parametrize(("address", "kind"), REFUSED.items())
def test_ssrf_guard_refuses(address, kind):
    reason = refusal_reason(ipaddress.ip_address(address), allow_private=False)
    assert reason is not None
    assert kind in reason


@pytest.mark.parametrize("address", PUBLIC)
def test_ssrf_guard_allows_public(address):
    assert refusal_reason(ipaddress.ip_address(address), allow_private=False) is None


def test_allow_private_keeps_metadata_and_multicast_refused():
    allowed = ipaddress.ip_address("127.0.0.1")
    assert refusal_reason(allowed, allow_private=True) is None
    for address in ("169.254.169.254", "224.0.0.1"):
        assert refusal_reason(ipaddress.ip_address(address), allow_private=True) is not None


async def test_ssrf_resolves_names_at_delivery_time():
    with pytest.raises(DeliveryRefused, match="loopback"):
        await resolve_public_address("localhost", 80, allow_private=False)
    assert await resolve_public_address("localhost", 80, allow_private=True) in ("127.0.0.1", "::1")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_ssrf_refused_delivery_is_logged_and_not_retried(client, receiver, host):
    """A real attempt with WEBHOOK_ALLOW_PRIVATE off: nothing reaches the receiver."""
    url = receiver.url("/private").replace("127.0.0.1", host)
    hook = await subscribe(client, url, retry_count=3)
    delivery_id = await add_pending_delivery(hook["id"])
    outcome = await deliver(delivery_id, allow_private=False)
    assert outcome.status == "failed"
    assert outcome.retry_in is None  # a refusal is final
    [delivery] = await deliveries(client, hook["id"])
    assert delivery["status"] == "failed"
    assert delivery["error_message"].startswith(f"Refused: host '{host}' resolves to")
    assert "loopback" in delivery["error_message"]
    assert "WEBHOOK_ALLOW_PRIVATE" in delivery["error_message"]
    assert receiver.requests("/private") == []


async def test_unresolvable_host_is_retried_not_refused(client):
    hook = await subscribe(client, "http://no-such-host.invalid/hook", retry_count=1)
    outcome = await deliver(await add_pending_delivery(hook["id"]), allow_private=False)
    assert outcome.status == "pending"
    assert outcome.retry_in is not None  # DNS may recover; an address refusal would not
    [delivery] = await deliveries(client, hook["id"])
    assert delivery["error_message"].startswith(
        "HostUnresolved: cannot resolve host 'no-such-host.invalid'"
    )
    assert delivery["next_attempt_at"] is not None


# --- batches: one claim, concurrent sends, one record ----------------------------------------


async def delivery_rows(ids: list[int]) -> dict[int, WebhookDelivery]:
    async with transaction() as session:
        rows = await session.execute(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
        return {row.id: row for row in rows.scalars()}


async def test_a_batch_records_each_outcome(client, receiver):
    """One receiver fails, another succeeds, a third webhook is inactive: each delivery of
    the one batch gets its own attempt row, status, streak and planned retry."""
    receiver.script("/fails", *[Reply(500, body=b"down")] * 2)
    ok = await subscribe(client, receiver.url("/ok"))
    failing = await subscribe(client, receiver.url("/fails"), retry_count=2)
    off = await subscribe(client, receiver.url("/off"))
    sent_ok = [await add_pending_delivery(ok["id"]) for _ in range(3)]
    sent_failing = [await add_pending_delivery(failing["id"]) for _ in range(2)]
    inactive = await add_pending_delivery(off["id"])
    await client.patch(f"{WEBHOOKS}/{off['id']}", json={"is_active": False})
    ids = [*sent_ok, *sent_failing, inactive]
    assert len(ids) <= BATCH_SIZE

    outcomes = await deliver_batch(ids)

    assert {i: outcomes[i].status for i in ids} == {
        **dict.fromkeys(sent_ok, "success"),
        **dict.fromkeys(sent_failing, "pending"),
        inactive: "skipped",
    }
    assert all(outcomes[i].retry_in is not None for i in sent_failing)
    assert len(receiver.requests("/ok")) == 3
    assert len(receiver.requests("/fails")) == 2
    assert receiver.requests("/off") == []
    rows = await delivery_rows(ids)
    for delivery_id in sent_ok:
        assert (rows[delivery_id].attempts, rows[delivery_id].response_status) == (1, 200)
        assert rows[delivery_id].next_attempt_at is None
    for delivery_id in sent_failing:
        row = rows[delivery_id]
        assert (row.status, row.attempts, row.error_message) == ("pending", 1, "HTTP 500")
        assert row.next_attempt_at is not None
    assert rows[inactive].status == "failed"
    assert rows[inactive].error_message == f"Not sent: webhook {off['id']} is inactive"
    logs = {d["id"]: d["attempt_log"] for d in await deliveries(client, failing["id"])}
    for delivery_id in sent_failing:
        [attempt] = logs[delivery_id]
        assert (attempt["status"], attempt["response_body"]) == ("failed", "down")
    states = {h["id"]: h for h in (await client.get(WEBHOOKS)).json()["items"]}
    assert states[failing["id"]]["failure_streak"] == 2
    assert states[ok["id"]]["failure_streak"] == 0
    # The retries are delayed messages queued with the record (published by the relay).
    async with transaction() as session:
        messages = (
            (
                await session.execute(
                    select(OutboxMessage.payload).where(
                        OutboxMessage.event_type == "deliver_webhook"
                    )
                )
            )
            .scalars()
            .all()
        )
    retried = sorted(i for payload in messages for i in payload["args"])
    assert retried == sorted(sent_failing)
    assert all(payload["eta_ms"] > time.time() * 1000 for payload in messages)


async def test_the_lease_covers_the_batch_and_expires_for_a_dead_worker(client, receiver):
    """A worker killed mid-batch claimed the rows and recorded nothing: no other worker sends
    them while the lease (the batch's slowest timeout + margin) runs; afterwards they go."""
    quick = await subscribe(client, receiver.url("/quick"), timeout=1)
    slow = await subscribe(client, receiver.url("/slowhost"), timeout=20)
    ids = [await add_pending_delivery(quick["id"]), await add_pending_delivery(slow["id"])]

    assert len(await claim(ids)) == 2  # the dead worker's claim
    async with transaction() as session:
        leases = (
            await session.execute(
                select(WebhookDelivery.next_attempt_at - func.now()).where(
                    WebhookDelivery.id.in_(ids)
                )
            )
        ).scalars()
        assert all(lease.total_seconds() > 20 + LEASE_MARGIN_SECONDS - 5 for lease in leases)
    assert set((await deliver_batch(ids)).values()) == {Outcome("skipped")}
    assert receiver.requests() == []

    # Time passes beyond the lease (the retry sweep then queues them again).
    async with transaction() as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(next_attempt_at=func.now() - dt.timedelta(seconds=1))
        )
    outcomes = await deliver_batch(ids)
    assert [outcomes[i].status for i in ids] == ["success", "success"]
    assert len(receiver.requests("/quick")) == len(receiver.requests("/slowhost")) == 1
    rows = await delivery_rows(ids)
    assert [rows[i].attempts for i in ids] == [1, 1]


async def test_overlapping_batches_send_each_delivery_once(client, receiver):
    """Duplicate and overlapping messages (two replicas): the claim lets one attempt through."""
    receiver.script("/shared", *[Reply(200, delay=0.2)] * 12)
    hook = await subscribe(client, receiver.url("/shared"))
    ids = [await add_pending_delivery(hook["id"]) for _ in range(12)]
    results = await asyncio.gather(
        deliver_batch(ids), deliver_batch(ids[::-1]), deliver_batch(ids[4:])
    )
    for delivery_id in ids:
        statuses = sorted(
            outcomes[delivery_id].status for outcomes in results if delivery_id in outcomes
        )
        assert statuses.count("success") == 1, (delivery_id, statuses)
        assert set(statuses) <= {"success", "skipped"}
    received = receiver.requests("/shared")
    assert len(received) == len({r.header("webhook-id") for r in received}) == 12
