"""The Dramatiq RabbitMQ broker (queues, middleware) shared by workers, the outbox relay and
the scheduler. Built here in `app/` so `workers/` depends on `app/`, never the reverse; the
worker command (workers/__main__.py) names it as `app.broker:broker`."""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys

import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware
from dramatiq.middleware.asyncio import AsyncIO

from app.config import get_settings
from app.logging import configure_logging
from app.tasks.context import shutting_down
from app.tasks.kinds import MAX_PRIORITY, QUEUES
from app.webhooks.delivery import close_client_sessions

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1
# Bounds the close of the webhook HTTP sessions at worker shutdown (TLS goodbyes included).
CLOSE_SESSIONS_TIMEOUT = 10.0
# The kernel's signal when the master dies. Not SIGTERM itself: a dramatiq worker process
# takes a second SIGTERM as "abandon the messages and exit", and both the kernel and the
# check below may fire for one death; this signal's handler sends the one SIGTERM.
MASTER_DIED = signal.SIGUSR2


def _stop_with_master() -> None:
    """SIGTERM this worker process, once, when dramatiq's master process dies.

    Otherwise a master killed outright (kill -9, the OOM killer) leaves its worker processes
    consuming beside the new master the supervisor starts. SIGTERM is a graceful stop: the
    running messages finish, or go back to the queue after WORKER_SHUTDOWN_TIMEOUT.
    """
    master = multiprocessing.parent_process()
    if master is None or not sys.platform.startswith("linux"):
        return
    stopping = False

    def stop_once(*_: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(MASTER_DIED, stop_once)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, MASTER_DIED)
    if os.getppid() != master.pid:  # it died before the request took effect (or just after)
        stop_once()


class WorkerSetup(Middleware):
    """Structured logs in every worker process; worker processes stop with their master;
    running tasks learn when their worker process is stopping; the webhook HTTP sessions are
    closed when it has stopped."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        _stop_with_master()

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Emitted before dramatiq stops and joins its worker threads; the event loop thread
        # (AsyncIO middleware) lives until after_worker_shutdown, so tasks can still clean up.
        shutting_down.set()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # The worker threads are joined by now (or gave up after the shutdown timeout), so no
        # delivery starts again. The AsyncIO middleware, added before this one, stops the loop
        # in its own after_worker_shutdown, which dramatiq calls after this (reverse order):
        # the webhook sessions made on that loop can still be closed on it.
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and loop_thread.loop.is_running():
            closed = loop_thread.run_coroutine(
                asyncio.wait_for(close_client_sessions(), CLOSE_SESSIONS_TIMEOUT)
            )
            if closed:
                log.info("webhook client sessions closed", count=closed)


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
