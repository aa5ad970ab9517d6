"""In-process read cache with TTLs, kept correct by PostgreSQL LISTEN/NOTIFY.

* Each entry carries tags naming the rows it was computed from: ("batches", "7"),
  ("products", "7") (the products of batch 7), ("work_centers", "2"), or a whole table
  ("batches", None).
* Statement-level triggers (migration 0002) NOTIFY `cache_invalidation` with the table
  and the keys a statement changed. Every api process LISTENs on a dedicated connection
  and drops the entries those keys name, whoever wrote: an api replica, a worker, an
  import, a migration or an operator's psql.
* Read-after-write, in this process and across replicas: before a hit is served the
  listener makes one round trip, a NOTIFY on its own private channel, and waits for it
  to come back. PostgreSQL hands notifications out in commit order, so once the token is
  back every change committed before the request arrived has been applied (a write made
  through this process included). Hits arriving together share one round trip.
* No listener, no cache: until LISTEN is in place, and from the moment its connection
  is lost until it is back, the cache is empty and every read is computed.

`X-Cache: HIT | MISS | BYPASS` on a response says which path a cached endpoint took.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.config import get_settings

log = structlog.get_logger(__name__)

CHANNEL = "cache_invalidation"  # the channel migration 0002's triggers notify

DASHBOARD_TTL = 300.0
LIST_TTL = 60.0
BATCH_TTL = 600.0
STATISTICS_TTL = 300.0
# Memory budget in rows held (products of a batch, items of a page; 1 for a small answer).
# Past it the oldest entries go; one answer above MAX_WEIGHT // 20 rows is not cached.
MAX_WEIGHT = 500_000

T = TypeVar("T")
Tag = tuple[str, str | None]  # (table, key); key None = anything in the table
# The dashboard is dropped by a new snapshot and by any change to what it summarises.
DASHBOARD_TAGS: tuple[Tag, ...] = (
    ("statistics_snapshots", "dashboard"),
    ("batches", None),
    ("products", None),
    ("work_centers", None),
)

_status: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "cache_status", default=None
)


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


class _BatchLike(Protocol):
    """A batch-shaped answer: its id and its work center's id."""

    @property
    def id(self) -> int: ...

    @property
    def work_center(self) -> _HasId: ...


def batch_tags(batch: _BatchLike) -> list[Tag]:
    """What one batch answer depends on: the batch row, its products, its work center."""
    key = str(batch.id)
    return [("batches", key), ("products", key), ("work_centers", str(batch.work_center.id))]


def batch_page_tags(items: Iterable[_BatchLike]) -> list[Tag]:
    """A filtered page: any batch change may alter which batches it holds."""
    return [("batches", None), *(tag for item in items for tag in batch_tags(item))]


@dataclass(slots=True)
class _Entry:
    value: Any
    expires_at: float
    tags: tuple[Tag, ...]
    weight: int


@dataclass(slots=True, eq=False)
class _Watch:
    """Invalidations that arrived while one value was being computed."""

    changed: list[tuple[str, frozenset[str] | None]] = field(default_factory=list)

    def affects(self, tags: Iterable[Tag]) -> bool:
        for table, key in tags:
            for changed_table, keys in self.changed:
                if changed_table == table and (keys is None or key is None or key in keys):
                    return True
        return False


class ReadCache:
    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._by_tag: dict[str, dict[str | None, set[Hashable]]] = {}
        self._watches: list[_Watch] = []
        self._listener: CacheListener | None = None
        # Bumped on attach/detach: a value computed across one of them is never stored.
        self._generation = 0
        self._weight = 0
        # Wall-clock time of the last change seen per table, and of the (re)subscription:
        # what a snapshot computed elsewhere is checked against (unchanged_since).
        self._changed_at: dict[str, float] = {}
        self._attached_at = float("inf")
        self.hits = self.misses = self.bypasses = 0

    @property
    def enabled(self) -> bool:
        return self._listener is not None

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_compute(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        *,
        ttl: float | Callable[[T], float],
        tags: Iterable[Tag] | Callable[[T], Iterable[Tag]],
        weight: Callable[[T], int] | None = None,
    ) -> T:
        """The cached value of `key`, or `compute()`'s (stored unless a write raced it)."""
        listener = self._listener
        if listener is None:
            self.bypasses += 1
            _note("BYPASS")
            return await compute()
        if self._live(key) is not None:
            if not await listener.barrier():  # the listener just failed: the cache is off
                self.bypasses += 1
                _note("BYPASS")
                return await compute()
            entry = self._live(key)  # the barrier may have applied invalidations
            if entry is not None:
                self.hits += 1
                _note("HIT")
                return entry.value
        self.misses += 1
        _note("MISS")
        generation, watch = self._generation, _Watch()
        self._watches.append(watch)
        try:
            value = await compute()
        finally:
            self._watches.remove(watch)
        final_tags = tuple(tags(value) if callable(tags) else tags)
        lifetime = ttl(value) if callable(ttl) else ttl
        rows = 1 if weight is None else max(1, weight(value))
        unchanged = generation == self._generation and self._listener is listener
        small = rows <= MAX_WEIGHT // 20
        if unchanged and small and lifetime > 0 and not watch.affects(final_tags):
            self._store(key, _Entry(value, time.monotonic() + lifetime, final_tags, rows))
        return value

    def invalidate(self, table: str, keys: Iterable[str] | None = None) -> None:
        """Drop what depends on `keys` of `table` (None: on anything in it)."""
        changed = None if keys is None else frozenset(keys)
        self._changed_at[table] = time.time()
        for watch in self._watches:
            watch.changed.append((table, changed))
        index = self._by_tag.get(table)
        if not index:
            return
        doomed: set[Hashable] = set()
        for tag_key in index if changed is None else [None, *changed]:
            doomed.update(index.get(tag_key, ()))
        for entry_key in doomed:
            self._drop(entry_key)

    def clear(self) -> None:
        self._entries.clear()
        self._by_tag.clear()
        self._weight = 0
        self._generation += 1

    def attach(self, listener: CacheListener) -> None:
        """LISTEN is in place: start caching from empty."""
        self.clear()
        self._listener = listener
        self._attached_at = time.time()

    def detach(self, listener: CacheListener) -> None:
        """Invalidations may be missed from now on: forget everything and bypass."""
        if self._listener is listener:
            self._listener = None
            self.clear()

    async def unchanged_since(self, tables: Iterable[str], moment: float) -> bool:
        """True only if no change to `tables` committed at or after `moment` (wall clock).

        Without a healthy listener, or for a moment before we started listening, nothing
        can be vouched for: False.
        """
        listener = self._listener
        if listener is None or not await listener.barrier():
            return False
        if moment <= self._attached_at:
            return False
        return all(self._changed_at.get(table, 0.0) < moment for table in tables)

    def _live(self, key: Hashable) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= time.monotonic():
            self._drop(key)
            return None
        return entry

    def _store(self, key: Hashable, entry: _Entry) -> None:
        self._drop(key)
        if self._weight + entry.weight > MAX_WEIGHT:
            now = time.monotonic()
            for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
                self._drop(stale)
            while self._weight + entry.weight > MAX_WEIGHT:  # still full: evict the oldest
                self._drop(next(iter(self._entries)))
        self._entries[key] = entry
        self._weight += entry.weight
        for table, tag_key in entry.tags:
            self._by_tag.setdefault(table, {}).setdefault(tag_key, set()).add(key)

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._weight -= entry.weight
        for table, tag_key in entry.tags:
            index = self._by_tag.get(table)
            keys = index.get(tag_key) if index else None
            if keys is None:
                continue
            keys.discard(key)
            if not keys:
                del index[tag_key]  # type: ignore[union-attr]


def _note(status: str) -> None:
    holder = _status.get()
    if holder is not None:
        holder.append(status)


class CacheListener:
    """The dedicated LISTEN connection of one api process, reconnecting with backoff."""

    PING_SECONDS = 10.0
    ROUND_TRIP_TIMEOUT = 5.0
    CONNECT_TIMEOUT = 10.0

    def __init__(self, cache: ReadCache, dsn: str | None = None) -> None:
        self.cache = cache
        self._dsn = dsn or get_settings().sync_database_url
        self._sync_channel = f"cache_sync_{uuid.uuid4().hex}"
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._rounds_started = 0
        self._rounds_completed = 0
        self._tokens: dict[str, asyncio.Future[None]] = {}

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._lost.is_set()

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._subscribe()
                backoff = 0.5
                await self._watch()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cache listener unavailable; reads bypass the cache", error=repr(exc))
            finally:
                await self._unsubscribe()
            if not self._stopping.is_set():
                await _wait(self._stopping, backoff)
                backoff = min(backoff * 2, 10.0)

    async def stop(self) -> None:
        self._stopping.set()
        await self._unsubscribe()  # closed here, so cancelling run() interrupts nothing

    def lose(self) -> None:
        """The connection can no longer be trusted: stop serving cached data now."""
        self._lost.set()
        self.cache.detach(self)

    async def barrier(self) -> bool:
        """True once every notification committed before this call has been applied."""
        ticket = self._rounds_started + 1  # any round that starts from now on will do
        async with self._lock:
            if self._rounds_completed >= ticket:
                return True  # a round that started after we arrived has just finished
            connection = self._connection
            if connection is None or self._lost.is_set():
                return False
            self._rounds_started += 1
            token = str(self._rounds_started)
            arrived = asyncio.get_running_loop().create_future()
            self._tokens[token] = arrived
            try:
                async with asyncio.timeout(self.ROUND_TRIP_TIMEOUT):
                    await connection.execute("SELECT pg_notify($1, $2)", self._sync_channel, token)
                    await arrived
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._tokens.pop(token, None)
                log.warning("cache listener round trip failed", error=repr(exc))
                self.lose()
                return False
            self._rounds_completed = int(token)
            return True

    async def _subscribe(self) -> None:
        self._lost.clear()
        connection = await asyncpg.connect(
            self._dsn,
            timeout=self.CONNECT_TIMEOUT,
            server_settings={"application_name": "production-control-cache"},
        )
        self._connection = connection
        connection.add_termination_listener(lambda _connection: self.lose())
        await connection.add_listener(CHANNEL, self._on_invalidation)
        await connection.add_listener(self._sync_channel, self._on_sync)
        self.cache.attach(self)
        log.info("cache listening for invalidations", channel=CHANNEL)

    async def _watch(self) -> None:
        """Until the connection is lost or we stop; a silent half-open link shows at a ping."""
        while not self._stopping.is_set() and not self._lost.is_set():
            await _wait(self._lost, self.PING_SECONDS)
            if not self._lost.is_set() and not await self.barrier():
                return

    async def _unsubscribe(self) -> None:
        self.lose()
        for arrived in self._tokens.values():
            arrived.cancel()
        self._tokens.clear()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()

    def _on_invalidation(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        table, _, keys = payload.partition(":")
        self.cache.invalidate(table, keys.split(",") if keys else None)

    def _on_sync(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        arrived = self._tokens.pop(payload, None)
        if arrived is not None and not arrived.done():
            arrived.set_result(None)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=timeout)


def cache_status_header(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: `X-Cache` tells which path a cached endpoint took."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        holder: list[str] = []
        token = _status.set(holder)

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start" and holder:
                MutableScopeHeaders.from_message(message)["X-Cache"] = holder[-1]
            await send(message)

        try:
            await app(scope, receive, send_with_status)
        finally:
            _status.reset(token)

    return middleware


read_cache = ReadCache()
