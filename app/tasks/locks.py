"""The per-task advisory lock: whoever holds it runs the task (TaskLock holds it).

A worker takes `pg_try_advisory_lock(TASK_LOCK_NAMESPACE, task_lock_key(id))` on a dedicated
connection before it claims a task and holds it until the task is finished. PostgreSQL drops
a session lock the moment its connection ends, so "lock free" means "no live owner".

This is the two-int key form; the scheduler's leader lock (app/schedule/leader_lock.py) uses
the one-bigint form, which PostgreSQL keeps in a separate key space (objsubid 1 vs 2), and a
different constant besides. The second int is the first 32 bits of the task's uuid: two
tasks that share them (about 1 in 4 billion per pair) only make each other wait.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Final

import asyncpg
import msgspec

from app.db import connect_lock_holder

TASK_LOCK_NAMESPACE: Final = 0x50435441  # "PCTA"; the scheduler leader uses 0x50435343

# application_name of a lock connection, so `pg_stat_activity` shows which task it holds.
TASK_LOCK_APPLICATION: Final = "pc-task "
LOCK_TIMEOUT: Final = 5.0  # seconds for one statement or close on the lock connection

LOCK_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def task_lock_key(task_id: uuid.UUID) -> int:
    """The lock's second key: the uuid's first 32 bits as a signed int4."""
    return int.from_bytes(task_id.bytes[:4], "big", signed=True)


def lock_is_held_sql(id_column: str) -> str:
    """SQL that is true while some session holds the lock of the task in `id_column`.

    pg_locks shows the two-int form as classid = key 1, objid = key 2 (as an unsigned oid),
    objsubid = 2. A hint only, read without locking: the reaper confirms it with a try-lock.
    """
    return f"""EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = {TASK_LOCK_NAMESPACE}
          AND l.objid::bigint
              = ('x' || left(replace({id_column}::text, '-', ''), 8))::bit(32)::bigint
    )"""


class TaskLock:
    """The task's session advisory lock, held by a dedicated connection for the whole run.

    The connection also carries the owner's claim and heartbeats (app/tasks/lifecycle.py):
    a failure on it means the lock, and so the task, is lost.
    """

    def __init__(self, task_id: uuid.UUID, connection: asyncpg.Connection) -> None:
        self.task_id = task_id
        self.connection = connection
        self.lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: self.lost.set())

    @classmethod
    async def try_acquire(cls, task_id: uuid.UUID) -> TaskLock | None:
        """The lock if nobody holds it, else None (the connection is closed again)."""
        connection = await connect_lock_holder(f"{TASK_LOCK_APPLICATION}{task_id}")
        try:
            await connection.set_type_codec(
                "jsonb",
                schema="pg_catalog",
                encoder=lambda value: msgspec.json.encode(value).decode(),
                decoder=msgspec.json.decode,
            )
            acquired = await connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)",
                TASK_LOCK_NAMESPACE,
                task_lock_key(task_id),
                timeout=LOCK_TIMEOUT,
            )
        except BaseException:
            connection.terminate()
            raise
        if not acquired:
            await _close(connection)
            return None
        return cls(task_id, connection)

    async def release(self) -> None:
        """Give the lock up by closing its connection (the only way it is held)."""
        await _close(self.connection)


async def _close(connection: asyncpg.Connection) -> None:
    if connection.is_closed():
        return
    try:
        await asyncio.wait_for(connection.close(), timeout=LOCK_TIMEOUT)
    except LOCK_CONNECTION_ERRORS:
        connection.terminate()
