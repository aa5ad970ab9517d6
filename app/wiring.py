"""What each process runs, composed in one place and never by import side effects.

* the api serves api_routes();
* every process that relays the outbox (the api, the scheduler, `make scheduler-run`)
  builds its relay with `outbox_relay()`, so every relay runs EVENT_HANDLERS and an event
  is handled the same whichever process picks it up;
* a worker process imports ACTOR_MODULES (each declares its actors on the broker), and
  exactly one actor exists per task kind in app.tasks.kinds;
* the scheduler's jobs are the table in app/schedule/plan.py (scheduler/ runs it); each
  names a task kind.

tests/unit/test_wiring.py fails when one of these lists misses something.
"""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from app.outbox import EventHandler, OutboxRelay
from app.webhooks.service import fan_out


def api_routes() -> list[ControllerRouterHandler]:
    """Every route the api serves. Imported here, on call, so the workers and the scheduler
    read this module without loading the HTTP layer (a second of start-up per process)."""
    from app.aggregation.api import AggregationController, aggregate_via_products
    from app.analytics.api import AnalyticsController
    from app.batches.api import BatchController
    from app.metrics.api import metrics
    from app.notifications.api import NotificationController
    from app.products.api import ProductController
    from app.reports.api import ReportController
    from app.schedule.api import ScheduleController
    from app.system.api import docs, docs_assets, health, health_head, ready
    from app.tasks.api import TaskController
    from app.transfer.api import TransferController
    from app.webhooks.api import WebhookController
    from app.work_centers.api import WorkCenterController

    return [
        health,
        health_head,
        ready,
        docs,
        docs_assets(),
        metrics,
        BatchController,
        ProductController,
        AggregationController,
        aggregate_via_products,
        TaskController,
        WorkCenterController,
        AnalyticsController,
        ScheduleController,
        WebhookController,
        ReportController,
        TransferController,
        NotificationController,
    ]


# Run inside the relay's transaction for every batch of committed events.
EVENT_HANDLERS: tuple[EventHandler, ...] = (fan_out,)

# Imported by worker processes only (the api and scheduler enqueue by name and never load
# worker code); named here so the worker command and the tests read one list.
ACTOR_MODULES: tuple[str, ...] = (
    "workers.actors.aggregation",
    "workers.actors.analytics",
    "workers.actors.batches",
    "workers.actors.files",
    "workers.actors.maintenance",
    "workers.actors.notifications",
    "workers.actors.reports",
    "workers.actors.transfer",
    "workers.actors.webhooks",
)


def outbox_relay() -> OutboxRelay:
    """The relay every process runs: the same event handlers everywhere."""
    return OutboxRelay(EVENT_HANDLERS)
