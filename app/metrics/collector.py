"""What /metrics reports beyond HTTP traffic, read when Prometheus scrapes.

The tasks, outbox and webhook_deliveries tables are the source of truth, so their gauges
come from one cheap query each rather than from counters kept in some process; queue depths
come from RabbitMQ (passive declares, as `make queues`). Every label value is from a closed
set (task kinds and statuses, queues, delivery statuses, outbox topics): never an id, a code
or a URL. A dependency that is down or slow costs at most a few seconds and shows as
`..._up 0`; the rest is still reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text

from app.db import transaction
from app.models import TaskStatus
from app.tasks.kinds import QUEUES, TASK_QUEUES

log = structlog.get_logger(__name__)

PREFIX = "production_control"
TIMEOUT_SECONDS = 2.0
DELIVERY_STATUSES = ("pending", "success", "failed")
OUTBOX_TOPICS = ("task", "event")
# make queues' companions of each queue: <queue>.DQ holds delayed retries, <queue>.XQ the dead.
QUEUE_STATES = {"": "ready", ".DQ": "delayed", ".XQ": "dead_letter"}


class Snapshot:
    """Metric families computed for one scrape (a prometheus_client collector)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


async def _read_database() -> list[Metric]:
    tasks = _gauge(
        "tasks", "Task rows by kind and status (kept TASK_RETENTION_DAYS)", ["kind", "status"]
    )
    backlog = _gauge("outbox_unpublished", "Outbox rows not yet published", ["topic"])
    oldest = _gauge(
        "outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox row"
    )
    deliveries = _gauge("webhook_deliveries", "Webhook deliveries by status", ["status"])
    async with transaction() as session:
        await session.execute(text(f"SET LOCAL statement_timeout = {int(TIMEOUT_SECONDS * 1000)}"))
        task_counts = {(kind, status): 0 for kind in TASK_QUEUES for status in TaskStatus}
        rows = await session.execute(
            text("SELECT kind, status, count(*) FROM tasks GROUP BY kind, status")
        )
        for kind, status, count in rows:
            if (kind, status) in task_counts:  # anything else would be an unbounded label
                task_counts[(kind, status)] = count
        outbox_counts = dict.fromkeys(OUTBOX_TOPICS, 0)
        oldest_age = 0.0
        rows = await session.execute(
            text(
                "SELECT topic, count(*), EXTRACT(EPOCH FROM now() - min(created_at)) "
                "FROM outbox WHERE published_at IS NULL GROUP BY topic"
            )
        )
        for topic, count, age in rows:
            if topic in outbox_counts:
                outbox_counts[topic] = count
            oldest_age = max(oldest_age, float(age))
        delivery_counts = dict.fromkeys(DELIVERY_STATUSES, 0)
        rows = await session.execute(
            text("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        )
        for status, count in rows:
            if status in delivery_counts:
                delivery_counts[status] = count
    for (kind, status), count in task_counts.items():
        tasks.add_metric([kind, status], count)
    for topic, count in outbox_counts.items():
        backlog.add_metric([topic], count)
    oldest.add_metric([], oldest_age)
    for status, count in delivery_counts.items():
        deliveries.add_metric([status], count)
    return [tasks, backlog, oldest, deliveries]


def _read_queues() -> list[Metric]:
    from app.queues import queue_depths  # pika only; the broker module is not loaded

    depths = {name: (ready, consumers) for name, ready, consumers in queue_depths(TIMEOUT_SECONDS)}
    messages = _gauge(
        "queue_messages", "Messages waiting in RabbitMQ by queue and state", ["queue", "state"]
    )
    consumers = _gauge("queue_consumers", "Consumers of each queue", ["queue"])
    for queue in QUEUES:
        for suffix, state in QUEUE_STATES.items():
            messages.add_metric([queue, state], depths.get(queue + suffix, (0, 0))[0])
        consumers.add_metric([queue], depths.get(queue, (0, 0))[1])
    return [messages, consumers]


async def _source(source: str, read: Callable[[], Awaitable[list[Metric]]]) -> list[Metric]:
    up = _gauge(f"{source}_up", f"1 when /metrics could read the {source}")
    try:
        families = await asyncio.wait_for(read(), timeout=TIMEOUT_SECONDS + 1)
    except Exception as exc:
        log.warning("metrics source unavailable", source=source, error=repr(exc)[:300])
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    return [*families, up]


async def collect_snapshot() -> Snapshot:
    """Database and broker gauges, read side by side, each with its `<source>_up` gauge."""
    database, broker = await asyncio.gather(
        _source("database", _read_database),
        _source("broker", lambda: asyncio.to_thread(_read_queues)),
    )
    return Snapshot([*database, *broker])


async def render_metrics() -> bytes:
    """This process's own metrics (HTTP requests) followed by the scrape-time gauges."""
    return generate_latest(REGISTRY) + generate_latest(await collect_snapshot())
