"""`python -m app.queues` (make queues): depth of every queue, its delay and dead-letter queues.

Uses passive queue declarations over AMQP, so it needs no management plugin.
"""

from __future__ import annotations

import sys

import pika

from app.config import get_settings
from app.tasks.kinds import QUEUES


def queue_depths(timeout: float | None = None) -> list[tuple[str, int, int]]:
    """(queue, ready messages, consumers) for each queue and its .DQ/.XQ companions.

    With a timeout, a broker that is down or hangs fails fast (the api's /metrics).
    """
    params = pika.URLParameters(get_settings().rabbitmq_url)
    if timeout is not None:
        params.socket_timeout = timeout
        params.blocked_connection_timeout = timeout
        params.stack_timeout = timeout
        params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    rows = []
    try:
        for queue in QUEUES:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel = connection.channel()
                try:
                    declared = channel.queue_declare(name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:  # not declared yet: empty
                    rows.append((name, 0, 0))
                    continue
                rows.append((name, declared.method.message_count, declared.method.consumer_count))
                channel.close()
    finally:
        connection.close()
    return rows


def main() -> int:
    print(f"{'queue':<16} {'ready':>8} {'consumers':>10}")
    for name, ready, consumers in queue_depths():
        print(f"{name:<16} {ready:>8} {consumers:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
