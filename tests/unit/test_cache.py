"""ReadCache bookkeeping: tags, races with invalidations, TTL, eviction, detach (no database)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app import cache as cache_module
from app.cache import ReadCache


class AlwaysInSync:
    """Stands in for the LISTEN connection: every barrier succeeds at once."""

    async def barrier(self) -> bool:
        return True


def attached() -> tuple[ReadCache, Any]:
    cache, listener = ReadCache(), AlwaysInSync()
    cache.attach(listener)  # type: ignore[arg-type]
    return cache, listener


async def read(cache: ReadCache, key: Any, value: Any, tags: Any, ttl: float = 60.0) -> Any:
    async def compute() -> Any:
        return value

    return await cache.get_or_compute(key, compute, ttl=ttl, tags=tags)


async def test_hit_until_a_matching_key_changes():
    cache, _ = attached()
    assert await read(cache, "b7", 1, [("batches", "7"), ("products", "7")]) == 1
    assert await read(cache, "b7", 2, [("batches", "7")]) == 1  # cached
    cache.invalidate("products", ["8", "9"])
    assert await read(cache, "b7", 3, [("batches", "7")]) == 1
    cache.invalidate("products", ["7"])
    assert await read(cache, "b7", 4, [("batches", "7")]) == 4
    assert (cache.hits, cache.misses) == (2, 2)


async def test_table_wide_tags_and_table_wide_changes():
    cache, _ = attached()
    await read(cache, "page", "p", [("batches", None), ("products", "1")])
    await read(cache, "b2", "b", [("batches", "2")])
    cache.invalidate("batches", ["5"])  # any batch: the page depends on the whole table
    assert len(cache) == 1
    cache.invalidate("batches")  # TRUNCATE or too many keys: everything on the table
    assert len(cache) == 0


async def test_an_invalidation_during_compute_is_not_cached():
    cache, _ = attached()
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "old"

    pending = asyncio.create_task(
        cache.get_or_compute("b1", slow, ttl=60, tags=lambda _v: [("batches", "1")])
    )
    await started.wait()
    cache.invalidate("batches", ["1"])  # committed while the old value was being read
    release.set()
    assert await pending == "old"
    assert len(cache) == 0
    assert await read(cache, "b1", "new", [("batches", "1")]) == "new"


async def test_an_unrelated_invalidation_during_compute_still_caches():
    cache, _ = attached()

    async def compute() -> str:
        cache.invalidate("batches", ["2"])
        return "v"

    await cache.get_or_compute("b1", compute, ttl=60, tags=[("batches", "1")])
    assert len(cache) == 1


async def test_expired_entries_are_recomputed():
    cache, _ = attached()
    await read(cache, "k", 1, [("batches", None)], ttl=0.01)
    await asyncio.sleep(0.02)
    assert await read(cache, "k", 2, [("batches", None)]) == 2
    assert await read(cache, "z", 1, [("batches", None)], ttl=0) == 1
    assert len(cache) == 1  # a zero TTL is never stored


async def test_full_cache_evicts_the_oldest(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache_module, "MAX_WEIGHT", 100)
    cache, _ = attached()
    for i in range(5):  # 5 answers of 5 rows
        await cache.get_or_compute(i, lambda i=i: _value(i), ttl=60, tags=[], weight=lambda _v: 5)
    for i in range(5, 85):  # 80 small answers: 105 rows in all, 5 over the budget
        await read(cache, i, i, [])
    assert len(cache) == 84
    assert await read(cache, 84, "recomputed", []) == 84
    assert await read(cache, 1, "recomputed", []) == 1
    assert await read(cache, 0, "recomputed", []) == "recomputed"  # the oldest went


async def test_an_oversized_answer_is_not_cached(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache_module, "MAX_WEIGHT", 100)
    cache, _ = attached()
    await cache.get_or_compute("big", lambda: _value("v"), ttl=60, tags=[], weight=lambda _v: 6)
    assert len(cache) == 0
    await cache.get_or_compute("ok", lambda: _value("v"), ttl=60, tags=[], weight=lambda _v: 5)
    assert len(cache) == 1


async def _value(value: Any) -> Any:
    return value


async def test_detached_cache_is_empty_and_bypassed():
    cache, listener = attached()
    await read(cache, "k", 1, [("batches", None)])
    cache.detach(listener)
    assert not cache.enabled
    assert len(cache) == 0
    assert await read(cache, "k", 2, [("batches", None)]) == 2
    assert cache.bypasses == 1
    assert len(cache) == 0


async def test_value_computed_across_a_reconnect_is_not_stored():
    cache, listener = attached()

    async def compute() -> str:
        cache.detach(listener)
        cache.attach(listener)
        return "v"

    await cache.get_or_compute("k", compute, ttl=60, tags=[("batches", None)])
    assert len(cache) == 0
