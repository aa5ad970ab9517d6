"""The Dramatiq RabbitMQ broker shared by workers, the api's outbox relay and the scheduler."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware
from dramatiq.middleware.asyncio import AsyncIO

from app.config import get_settings
from app.logging import configure_logging
from app.tasks.kinds import MAX_PRIORITY, QUEUES


class WorkerSetup(Middleware):
    """Structured logs in every worker process."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)


broker = RabbitmqBroker(
    url=get_settings().rabbitmq_url,
    # Publisher confirms: the relay marks an outbox row published only once RabbitMQ has it.
    confirm_delivery=True,
    max_priority=MAX_PRIORITY,
)
broker.add_middleware(AsyncIO())
broker.add_middleware(WorkerSetup())
# A worker group started with a metrics port (workers/__main__.py) serves dramatiq's metrics
# there; the api and the scheduler, which only enqueue, never set one.
if os.environ.get("dramatiq_prom_port"):  # noqa: SIM112 (dramatiq spells it so)
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
for queue in QUEUES:
    broker.declare_queue(queue)
dramatiq.set_broker(broker)
