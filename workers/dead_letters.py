"""`python -m workers.dead_letters list|requeue`: inspect and replay dead-lettered messages.

Dramatiq moves a message that failed past its retries to `<queue>.XQ`. Requeue moves each
back to its queue and resets its task row (if any) to RETRYING so the actor claims it again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import dramatiq
import pika

from app.config import get_settings
from app.tasks.kinds import QUEUES


def _channel() -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(get_settings().rabbitmq_url))
    return connection, connection.channel()


def _dead_letters(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str
) -> Iterator[tuple[int, dramatiq.Message[Any]]]:
    """Yield (delivery tag, message) for every message in `queue`.XQ (declared if missing)."""
    from app.broker import broker

    broker.declare_queue(queue, ensure=True)  # also declares .DQ and .XQ with their arguments
    while True:
        method, _properties, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
        if method is None:
            return
        yield method.delivery_tag, dramatiq.Message.decode(body)


def list_dead_letters() -> int:
    connection, channel = _channel()
    count = 0
    try:
        for queue in QUEUES:
            for _tag, message in _dead_letters(channel, queue):
                count += 1
                print(
                    f"{queue:<9} {message.message_id} {message.actor_name}{tuple(message.args)} "
                    f"retries={message.options.get('retries', 0)}"
                )
    finally:
        connection.close()  # closing returns every un-acknowledged message to its queue
    print(f"{count} dead-lettered message(s)")
    return count


def requeue_dead_letters() -> int:
    from app.broker import broker

    connection, channel = _channel()
    try:
        held = [
            (tag, message) for queue in QUEUES for tag, message in _dead_letters(channel, queue)
        ]
        # Reset the task rows first: a message that arrives before its task is claimable
        # would be taken as a duplicate of a finished task and dropped.
        _in_own_loop(_reset_tasks([message.message_id for _, message in held]))
        for tag, message in held:
            broker.enqueue(message.copy(options={**message.options, "retries": 0}))
            channel.basic_ack(tag)
    finally:
        connection.close()
    print(f"requeued {len(held)} message(s)")
    return len(held)


def _in_own_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion on a private loop (callable from sync or async code)."""
    thread = threading.Thread(target=asyncio.run, args=(coroutine,))
    thread.start()
    thread.join()


async def _reset_tasks(message_ids: list[str]) -> None:
    """Task-backed messages use the task id as message id: make those tasks claimable again."""
    from app.db import dispose_engine, transaction
    from app.tasks.lifecycle import reset_for_requeue

    ids = []
    for message_id in message_ids:
        try:
            ids.append(uuid.UUID(message_id))
        except ValueError:
            continue
    if ids:
        async with transaction() as session:
            await reset_for_requeue(session, ids)
    await dispose_engine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.dead_letters")
    parser.add_argument("action", choices=["list", "requeue"])
    args = parser.parse_args(argv)
    if args.action == "list":
        list_dead_letters()
    else:
        requeue_dead_letters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
