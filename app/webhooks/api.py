"""HTTP for webhooks: subscriptions, their delivery log, redelivery and a test ping."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.api_support import CONFLICT, INVALID, NOT_FOUND, RULE, Db
from app.idempotency import IdempotentOperation
from app.schemas import Offset, PositiveId
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryList,
    DeliveryOut,
    DeliveryStatus,
    WebhookCreate,
    WebhookEvent,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)

PageSize = Annotated[int, Parameter(ge=1, le=100, description="Page size (1..100)")]

DELIVERY_SEMANTICS = """
Every event (`batch_created`, `batch_updated`, `batch_closed`, `product_aggregated`,
`report_generated`, `import_completed`) is recorded in the transaction that caused it and
delivered by workers on the `webhooks` queue to each active subscription listing it.

* **Request**: `POST` of `{"id", "event", "created_at", "data"}` as JSON. Headers:
  `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret_key, raw body)>`, `X-Webhook-Event`,
  `X-Webhook-Id`, and the Standard Webhooks `webhook-id`, `webhook-timestamp`,
  `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with
  the base64-decoded part of a `whsec_…` secret, otherwise with the secret's UTF-8 bytes).
* **Success** is any 2xx within `timeout` seconds. Redirects are not followed (a 3xx fails).
  Other answers, timeouts and connection errors are retried up to `retry_count` times with
  exponential backoff and jitter; every attempt is in the delivery log.
* **At-least-once**: a delivery may arrive more than once; `webhook-id` (= the event id) is
  stable across retries and redeliveries, so receivers deduplicate on it.
* **No ordering**: deliveries are sent concurrently and retried independently, so events for
  one subscription may arrive in any order; use `created_at` and the data to order them.
* **Deactivation**: after WEBHOOK_FAILURE_LIMIT (default 20) failed attempts in a row a
  subscription is deactivated; `disabled_reason` says why, and its pending deliveries end as
  failed without being sent. `PATCH {"is_active": true}` re-enables it; events that happened
  while it was inactive are not delivered later.
* **Address guard**: the URL's host is resolved at delivery time and loopback, private,
  link-local, multicast and cloud-metadata addresses are refused, without retries
  (`WEBHOOK_ALLOW_PRIVATE=true` lifts this, except for metadata and multicast, in development
  and tests). The request goes to the vetted address, so DNS cannot be re-answered.
"""


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]

    @post(
        "/",
        summary="Subscribe to events",
        description=(
            "`secret_key` is write-only: it is never returned (rotate it with PATCH). The URL "
            "must be http(s) without credentials.\n" + DELIVERY_SEMANTICS
        ),
        status_code=HTTP_201_CREATED,
        responses={**CONFLICT, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def create_webhook(self, db: Db, data: JSONBody[WebhookCreate]) -> WebhookOut:
        return await service.create_webhook(db, data)

    @get("/", summary="List webhook subscriptions", responses=INVALID)
    async def list_webhooks(
        self,
        db: Db,
        is_active: FromQuery[bool | None] = None,
        event: Annotated[
            WebhookEvent | None, Parameter(description="Only subscriptions to this event")
        ] = None,
        offset: Offset = 0,
        limit: PageSize = 20,
    ) -> WebhookList:
        return await service.list_webhooks(
            db, is_active=is_active, event=event, offset=offset, limit=limit
        )

    @get(
        "/{webhook_id:str}",
        summary="Get a webhook subscription",
        responses={**NOT_FOUND, **INVALID},
    )
    async def get_webhook(self, db: Db, webhook_id: PositiveId) -> WebhookOut:
        return await service.get_webhook(db, webhook_id)

    @patch(
        "/{webhook_id:str}",
        summary="Update a webhook subscription",
        description=(
            "Any field. `secret_key` rotates the key for every later attempt (retries of older "
            "events included). `is_active: true` re-enables a deactivated subscription and "
            "clears `disabled_reason` and `failure_streak`."
        ),
        responses={**NOT_FOUND, **INVALID},
    )
    async def update_webhook(
        self, db: Db, webhook_id: PositiveId, data: JSONBody[WebhookUpdate]
    ) -> WebhookOut:
        return await service.update_webhook(db, webhook_id, data)

    @delete(
        "/{webhook_id:str}",
        summary="Delete a webhook subscription",
        description=(
            "Deletes the subscription **and its delivery history** (deliveries and attempts are "
            "not kept). Pending deliveries are dropped."
        ),
        status_code=HTTP_204_NO_CONTENT,
        responses={**NOT_FOUND, **INVALID},
    )
    async def delete_webhook(self, db: Db, webhook_id: PositiveId) -> None:
        await service.delete_webhook(db, webhook_id)

    @get(
        "/{webhook_id:str}/deliveries",
        summary="Delivery log of a webhook",
        description=(
            "Newest first; each delivery carries its `attempt_log` (status, response code, "
            "truncated response body, error, duration)."
        ),
        responses={**NOT_FOUND, **INVALID},
    )
    async def list_deliveries(
        self,
        db: Db,
        webhook_id: PositiveId,
        status: Annotated[
            DeliveryStatus | None, Parameter(description="pending, success or failed")
        ] = None,
        event: Annotated[
            str | None, Parameter(description="Event name, e.g. batch_created")
        ] = None,
        offset: Offset = 0,
        limit: PageSize = 20,
    ) -> DeliveryList:
        return await service.list_deliveries(
            db, webhook_id, status=status, event=event, offset=offset, limit=limit
        )

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver",
        summary="Send a finished delivery again",
        description=(
            "One new attempt now, with the same `webhook-id`. A pending delivery (its next "
            "attempt is already planned) is a 409; an inactive webhook is a 400."
        ),
        status_code=HTTP_202_ACCEPTED,
        responses={**NOT_FOUND, **CONFLICT, **RULE, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def redeliver(
        self, db: Db, webhook_id: PositiveId, delivery_id: PositiveId
    ) -> DeliveryOut:
        return await service.redeliver(db, webhook_id, delivery_id)

    @post(
        "/{webhook_id:str}/test",
        summary="Send a test ping",
        description=(
            "Queues a `ping` event (`data: {webhook_id, message}`), signed like every delivery; "
            "sent even to an inactive webhook so a fixed receiver can be checked first."
        ),
        status_code=HTTP_202_ACCEPTED,
        responses={**CONFLICT, **NOT_FOUND, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def send_test(self, db: Db, webhook_id: PositiveId) -> DeliveryOut:
        return await service.send_test(db, webhook_id)
