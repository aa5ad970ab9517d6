"""`python -m workers.queues` (make queues): depth of every queue, its delay and dead-letter queues.

Uses passive queue declarations over AMQP, so it needs no management plugin.
"""

from __future__ import annotations

import sys

import pika

from app.config import get_settings
from app.tasks.kinds import QUEUES


def queue_depths() -> list[tuple[str, int, int]]:
    """(queue, ready messages, consumers) for each queue and its .DQ/.XQ companions."""
    connection = pika.BlockingConnection(pika.URLParameters(get_settings().rabbitmq_url))
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
