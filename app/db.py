"""Engines and sessions: one engine per event loop (asyncpg connections belong to a loop).

A process normally has one loop (the api server, a worker's event-loop thread, the
scheduler); the registry only matters where several loops share a process, as in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import msgspec
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from app.config import get_settings

T = TypeVar("T")
U = TypeVar("U")

_engines: dict[asyncio.AbstractEventLoop, tuple[AsyncEngine, async_sessionmaker[AsyncSession]]] = {}


def _current() -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    loop = asyncio.get_running_loop()
    if loop not in _engines:
        for stale in [other for other in _engines if other.is_closed()]:
            del _engines[stale]
        engine = create_async_engine(
            get_settings().database_url,
            pool_size=10,
            max_overflow=20,
            # The connection used last goes out first: under light load requests run on a
            # few warm connections (statements prepared, type codecs loaded: ~20 ms on a
            # connection's first 1C feed) instead of cycling through all of them.
            pool_use_lifo=True,
            # Bound parameters can hold secrets (webhook keys): keep them out of every error
            # message and traceback.
            hide_parameters=True,
            # JSONB columns (task params of 100,000 codes, events, checkpoints) through
            # msgspec: several times faster than the json module SQLAlchemy uses by default.
            json_serializer=_encode_json,
            json_deserializer=msgspec.json.decode,
            connect_args={"server_settings": {"application_name": "production-control"}},
        )
        event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
        _engines[loop] = (engine, async_sessionmaker(engine, expire_on_commit=False))
    return _engines[loop]


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: a connection the server closed (restart, pg_terminate_backend) is
    replaced before use.

    Instead of pool_pre_ping, which costs three round trips per checkout (BEGIN, a ping,
    ROLLBACK: a third of a one-row request). asyncpg notices a closed socket by itself; a
    link that died silently fails its first statement, and SQLAlchemy then invalidates the
    whole pool.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise exc.DisconnectionError("connection closed by the server")


def get_engine() -> AsyncEngine:
    return _current()[0]


def get_sessionmaker() -> async_sessionmaker[AsyncSession]:
    return _current()[1]


@asynccontextmanager
async def transaction() -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with get_sessionmaker()() as session, session.begin():
        yield session


async def while_executing(statement: Awaitable[T], work: Callable[[], U]) -> tuple[T, U]:
    """Run `work` (CPU only, no awaits) while the database executes `statement`.

    The statement is sent first (one turn of the event loop takes it to the socket), so the
    api's CPU and PostgreSQL's overlap instead of taking turns. If anything fails or the
    request is cancelled, the statement is cancelled and waited for before the error goes
    on: the connection is never left busy under its session.
    """
    pending = asyncio.ensure_future(statement)
    try:
        await asyncio.sleep(0)
        done = work()
        return await pending, done
    except BaseException:
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        raise


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection of `session`, inside its transaction (begun for real)."""
    driver: asyncpg.Connection | None = (
        await (await session.connection()).get_raw_connection()
    ).driver_connection
    assert driver is not None
    if not driver.is_in_transaction():
        await session.execute(text("SELECT"))  # SQLAlchemy sends BEGIN with a first statement
    return driver


@asynccontextmanager
async def statement_connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg connection, outside any transaction: each statement
    commits by itself.

    For a request that is one statement (a single product): a session's bookkeeping (the
    Session, its transaction object, connection events) costs more CPU than the statement.
    """
    fairy = await get_engine().raw_connection()
    try:
        driver: asyncpg.Connection = fairy.driver_connection
        yield driver
    finally:
        # Back to the pool in a greenlet: the pool's reset may have to await the driver.
        await greenlet_spawn(fairy.close)


async def dispose_engine() -> None:
    """Close this loop's pool (at shutdown)."""
    entry = _engines.pop(asyncio.get_running_loop(), None)
    if entry is not None:
        await entry[0].dispose()


async def connect_lock_holder(application_name: str) -> asyncpg.Connection:
    """A dedicated connection for session-level advisory locks (the scheduler's leadership,
    a running task's ownership): named in pg_stat_activity, and with TCP keepalives so the
    connection of a vanished host, and with it its locks, is dropped after ~10 + 3 x 5 s."""
    return await asyncpg.connect(
        get_settings().sync_database_url,
        timeout=10,
        server_settings={
            "application_name": application_name[:63],
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
        },
    )
