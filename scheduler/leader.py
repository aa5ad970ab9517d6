"""Leadership: holding a PostgreSQL session advisory lock on a dedicated connection.

Only the leader runs the schedule; the others retry every SCHEDULER_LEADER_RETRY seconds.
PostgreSQL releases the lock when the leader's connection ends (process killed, host
gone, server restart), so a follower takes over; server-side TCP keepalives bound how
long a vanished host keeps it. Two leaders for a moment (a partition the old one has not
noticed yet) stay harmless: each fire is still recorded once under its unique key.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from app.db import connect_lock_holder
from app.schedule.leader_lock import APPLICATION_PREFIX, LEADER_LOCK_KEY

log = structlog.get_logger("scheduler")

PING_TIMEOUT = 5.0

CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Leadership:
    def __init__(self, scheduler_id: str) -> None:
        self.scheduler_id = scheduler_id
        self.lost = asyncio.Event()
        self._connection: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; keeps (or reopens) the connection either way."""
        if self._connection is None or self._connection.is_closed():
            self._connection = await connect_lock_holder(f"{APPLICATION_PREFIX}{self.scheduler_id}")
            self._connection.add_termination_listener(lambda _connection: self.lost.set())
        self.lost.clear()
        acquired = await self._connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY, timeout=PING_TIMEOUT
        )
        return bool(acquired)

    async def still_held(self) -> bool:
        """A round trip on the lock's connection: False once it is gone."""
        if self._connection is None or self.lost.is_set():
            return False
        try:
            await self._connection.fetchval("SELECT 1", timeout=PING_TIMEOUT)
        except CONNECTION_ERRORS as exc:
            log.warning("leader connection failed", error=repr(exc))
            self.lost.set()
            return False
        return True

    async def release(self) -> None:
        """Give the lock up by closing its connection (the only way it is held)."""
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), timeout=PING_TIMEOUT)
        except CONNECTION_ERRORS:
            connection.terminate()
