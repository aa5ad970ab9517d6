"""The Dramatiq RabbitMQ broker shared by workers, the api's outbox relay and the scheduler."""

from __future__ import annotations

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
for queue in QUEUES:
    broker.declare_queue(queue)
dramatiq.set_broker(broker)
