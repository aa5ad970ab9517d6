"""In-process read cache with TTLs, kept correct by a change log in PostgreSQL.

* Each entry carries tags naming the rows it was computed from: ("batches", "7"),
  ("products", "7") (the products of batch 7), ("work_centers", "2"), or a whole table
  ("batches", None).
* Statement-level triggers (migration 0006) append to `cache_changes` the writing
  transaction's id, the table and the keys a statement changed, whoever wrote: an api
  replica, a worker, an import, a migration or an operator's psql. Unlike a NOTIFY per
  statement (0002, which serialised every committing writer on one lock), appending rows
  lets concurrent transactions commit together.
* Read-after-write, in this process and across replicas: before a hit is served the
  reader makes one round trip on its dedicated connection: the log rows of the
  transactions that committed since its previous snapshot (not visible in it, visible
  now), and a new snapshot. Commit order, not id order, is what counts, and snapshots
  say exactly which transactions had committed. Once it is back, every change committed
  before the request arrived has been applied (a write made through this process
  included). Hits arriving together share one round trip; a ping every few seconds keeps
  the snapshot recent and prunes the log.
* No reader, no cache: until its connection is up, and from the moment it is lost until
  it is back, the cache is empty and every read is computed.

`X-Cache: HIT | MISS | BYPASS` on a response says which path a cached endpoint took.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings

log = structlog.get_logger(__name__)


# The log rows of what committed after `{snapshot}` (a pg_current_snapshot()): transactions
# that had not started then (xid >= its xmax) or were in progress (its xip), and whose rows
# the reading statement sees, so have committed now. Commit order, not id order.
def _committed_since(snapshot: str) -> str:
    return f"""(xid >= pg_snapshot_xmax({snapshot})::text::bigint
        OR xid = ANY(ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip({snapshot}) AS x)))"""


# What committed since `$1`, the reader's previous snapshot, and its new snapshot.
_CHANGES_SINCE = f"""
SELECT pg_current_snapshot()::text,
       ARRAY(SELECT DISTINCT table_name || coalesce(':' || array_to_string(keys, ','), '')
               FROM cache_changes
              WHERE {_committed_since("$1::text::pg_snapshot")})
"""
# Rows below $1 are deleted; the '*' row tells every reader which ones, in the same commit.
PRUNE = """
WITH pruned AS (DELETE FROM cache_changes WHERE xid < $1::bigint)
INSERT INTO cache_changes (xid, table_name, keys)
VALUES (pg_current_xact_id()::text::bigint, '*', ARRAY[$1::bigint::text])
"""
EVERYTHING = "*"  # the table name of a log row that says "forget everything"
# Whether a change to one of :tables committed that :snapshot (a pg_current_snapshot())
# does not show: a row of such a transaction, a TRUNCATE of the log since, or rows pruned
# that it had not seen.
_CHANGED_SINCE = f"""
WITH s AS (SELECT CAST(CAST(:snapshot AS text) AS pg_snapshot) AS snapshot)
SELECT EXISTS (
           SELECT FROM cache_changes, s
            WHERE {_committed_since("s.snapshot")}
              AND (table_name = ANY(CAST(:tables AS text[]))
                   OR (table_name = '*' AND keys IS NULL)))
    OR EXISTS (
           SELECT FROM cache_changes, s
            WHERE table_name = '*'
              AND keys[1]::bigint > pg_snapshot_xmin(s.snapshot)::text::bigint)
"""


async def current_snapshot(session: AsyncSession) -> str:
    """pg_current_snapshot() in `session`: what `changed_since` later compares with."""
    return str((await session.execute(text("SELECT pg_current_snapshot()::text"))).scalar_one())


async def changed_since(session: AsyncSession, tables: Sequence[str], snapshot: str) -> bool:
    """Whether any of `tables` changed in a way `snapshot` (from `current_snapshot`) did not
    show, whoever wrote: exact, from the change log, and independent of any clock."""
    changed = await session.execute(
        text(_CHANGED_SINCE), {"snapshot": snapshot, "tables": list(tables)}
    )
    return bool(changed.scalar_one())


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
        # Changes committed until now are applied first: to a hit, so it is not stale, and
        # to a miss too, or the value stored below would be dropped by the next round trip
        # for changes it already includes.
        if not await listener.barrier():  # the reader just failed: the cache is off
            self.bypasses += 1
            _note("BYPASS")
            return await compute()
        entry = self._live(key)
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
        """The change log is being read: start caching from empty."""
        self.clear()
        self._listener = listener

    def detach(self, listener: CacheListener) -> None:
        """Invalidations may be missed from now on: forget everything and bypass."""
        if self._listener is listener:
            self._listener = None
            self.clear()

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
    """The dedicated change-log connection of one api process, reconnecting with backoff.

    (A listener in name: it used to LISTEN for NOTIFYs; it now reads `cache_changes`.)
    """

    PING_SECONDS = 5.0
    ROUND_TRIP_TIMEOUT = 5.0
    CONNECT_TIMEOUT = 10.0
    # Log rows older than this are pruned (any reader polls every PING_SECONDS, so it has
    # read them long before); a reader whose snapshot is older forgets everything.
    KEEP_SECONDS = 60.0

    def __init__(self, cache: ReadCache, dsn: str | None = None) -> None:
        self.cache = cache
        self._dsn = dsn or get_settings().sync_database_url
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._rounds_started = 0
        self._rounds_completed = 0
        self._snapshot = ""  # pg_current_snapshot() as of the last round trip
        self._xmin = 0  # its xmin: every transaction below it had finished
        # (monotonic time, xmin) of past snapshots, oldest first: where pruning may stop.
        self._horizons: deque[tuple[float, int]] = deque()
        self._pruned_below = 0

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
                log.warning("cache change log unavailable; reads bypass the cache", error=repr(exc))
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
        """True once every change committed before this call has been applied."""
        ticket = self._rounds_started + 1  # any round that starts from now on will do
        async with self._lock:
            if self._rounds_completed >= ticket:
                return True  # a round that started after we arrived has just finished
            connection = self._connection
            if connection is None or self._lost.is_set():
                return False
            self._rounds_started += 1
            round_ = self._rounds_started
            try:
                async with asyncio.timeout(self.ROUND_TRIP_TIMEOUT):
                    row = await connection.fetchrow(_CHANGES_SINCE, self._snapshot)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cache change log round trip failed", error=repr(exc))
                self.lose()
                return False
            assert row is not None
            self._apply(row[1])
            self._advance(row[0])
            self._rounds_completed = round_
            return True

    async def prune(self) -> None:
        """Delete the log rows every reader has had KEEP_SECONDS to read."""
        cutoff = time.monotonic() - self.KEEP_SECONDS
        below = 0
        while self._horizons and self._horizons[0][0] <= cutoff:
            below = self._horizons.popleft()[1]
        if below <= self._pruned_below:
            return
        async with self._lock:
            connection = self._connection
            if connection is None or self._lost.is_set():
                return
            try:
                async with asyncio.timeout(self.ROUND_TRIP_TIMEOUT):
                    await connection.execute(PRUNE, below)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cache change log prune failed", error=repr(exc))
                self.lose()
                return
            self._pruned_below = below

    def _apply(self, changes: list[str]) -> None:
        for change in changes:
            table, _, keys = change.partition(":")
            if table != EVERYTHING:
                self.cache.invalidate(table, keys.split(",") if keys else None)
            elif not keys or int(keys) > self._xmin:
                # The log was truncated, or pruned of rows this reader had not read yet.
                self.cache.clear()

    def _advance(self, snapshot: str) -> None:
        self._snapshot = snapshot
        self._xmin = int(snapshot.partition(":")[0])
        now = time.monotonic()
        if not self._horizons or self._horizons[-1][0] <= now - 1.0:
            self._horizons.append((now, self._xmin))

    async def _subscribe(self) -> None:
        self._lost.clear()
        connection = await asyncpg.connect(
            self._dsn,
            timeout=self.CONNECT_TIMEOUT,
            server_settings={"application_name": "production-control-cache"},
        )
        self._connection = connection
        connection.add_termination_listener(lambda _connection: self.lose())
        # The cache starts empty, so only what commits after this snapshot matters.
        self._advance(await connection.fetchval("SELECT pg_current_snapshot()::text"))
        self.cache.attach(self)
        log.info("cache reading the change log", table="cache_changes")

    async def _watch(self) -> None:
        """Until the connection is lost or we stop; a silent half-open link shows at a ping."""
        while not self._stopping.is_set() and not self._lost.is_set():
            await _wait(self._lost, self.PING_SECONDS)
            if self._lost.is_set() or not await self.barrier():
                return
            await self.prune()

    async def _unsubscribe(self) -> None:
        self.lose()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=timeout)


def cache_status_header(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: `X-Cache` tells which path a cached endpoint took (GETs only: no
    other method reads through the cache)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
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
