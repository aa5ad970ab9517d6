"""Analytics figures: the dashboard over 10,000 batches and 1,000,000 products.

* refresh_statistics duration (the actor, run as `make scheduler-run JOB=refresh_statistics`
  does; its compute time and its end-to-end task time),
* GET /api/v1/analytics/dashboard p50/p95 over HTTP against the api under uvicorn:
  cached (X-Cache HIT: one LISTEN round trip, no query), uncached (MISS: the snapshot is
  read; each request follows a snapshot change), and cold (no snapshot: recomputed inline),
* the same cached/uncached pair for one batch's statistics.

Data is generated with set-based SQL straight into the harness's own database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from bench.harness import ROOT, Stack, wait_task
from tests import support

BATCHES = 10_000
PRODUCTS_PER_BATCH = 100  # 1,000,000 products
WORK_CENTERS = 20
CACHED_REQUESTS = 300
UNCACHED_REQUESTS = 100
COLD_REQUESTS = 3
REFRESH_RUNS = 5

SEED = [
    f"""
    INSERT INTO work_centers (identifier, name)
    SELECT 'WC-' || n, 'Line ' || n FROM generate_series(1, {WORK_CENTERS}) n
    """,
    # Spread over the last 60 days (a slice of them today), three shifts, 40 % closed.
    f"""
    INSERT INTO batches (is_closed, closed_at, task_description, work_center_id, shift, team,
                         batch_number, batch_date, nomenclature, ekn_code, shift_start, shift_end)
    SELECT n % 5 < 2, CASE WHEN n % 5 < 2 THEN d + interval '20 hours' END,
           'Shift task ' || n, 1 + n % {WORK_CENTERS}, (1 + n % 3)::text, 'Team ' || n % 7,
           n, d::date, 'Product ' || n % 50, 'EKN-' || n % 13,
           d + interval '8 hours', d + interval '20 hours'
    FROM (SELECT n, current_date - (n % 60) AS d FROM generate_series(1, {BATCHES}) n) s
    """,
]
# Products in slices (bounded transition tables for the cache triggers); ~70 % aggregated.
PRODUCTS_SLICE = f"""
    INSERT INTO products (unique_code, batch_id, is_aggregated, aggregated_at)
    SELECT 'P' || b.id || '-' || k, b.id, k % 10 < 7,
           CASE WHEN k % 10 < 7 THEN b.shift_start + k * interval '5 minutes' END
    FROM batches b CROSS JOIN generate_series(1, {PRODUCTS_PER_BATCH}) k
    WHERE b.id > $1 AND b.id <= $2
"""


def _dsn() -> str:
    return support.TEST_DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _seed() -> float:
    started = time.perf_counter()
    connection = await asyncpg.connect(_dsn())
    try:
        for statement in SEED:
            await connection.execute(statement)
        step = 1_000
        for low in range(0, BATCHES, step):
            await connection.execute(PRODUCTS_SLICE, low, low + step)
        await connection.execute("VACUUM ANALYZE")  # as autovacuum would have by now
    finally:
        await connection.close()
    return time.perf_counter() - started


async def _sql(statement: str) -> None:
    connection = await asyncpg.connect(_dsn())
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _refresh_statistics(stack: Stack, client: httpx.Client) -> dict[str, Any]:
    """`make scheduler-run JOB=refresh_statistics` and wait for the task."""
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "run", "refresh_statistics"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"task ([0-9a-f-]{36}) enqueued", done.stdout)
    assert found, done.stdout + done.stderr
    task = wait_task(client, found.group(1))
    assert task["status"] == "SUCCESS", task
    return task


def _timed_gets(
    client: httpx.Client,
    url: str,
    count: int,
    expect: str,
    before: Callable[[], None] | None = None,
) -> list[float]:
    """Latency (ms) of `count` GETs that took the `expect` cache path."""
    latencies: list[float] = []
    while len(latencies) < count:
        if before is not None:
            before()
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        if response.headers["x-cache"] == expect:
            latencies.append(elapsed)
    return latencies


def _p(latencies: list[float], q: int) -> float:
    return round(statistics.quantiles(latencies, n=100)[q - 1], 2) if len(latencies) > 1 else 0.0


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"batches": BATCHES, "products": BATCHES * PRODUCTS_PER_BATCH}
    with Stack(queues=("heavy",)) as stack, stack.client() as client:
        figures["seed_s"] = round(asyncio.run(_seed()), 1)

        runs = [_refresh_statistics(stack, client) for _ in range(REFRESH_RUNS)]
        computes = [task["result"]["duration_ms"] for task in runs]
        figures["refresh_statistics_compute_p50_ms"] = round(statistics.median(computes), 1)
        figures["refresh_statistics_compute_max_ms"] = round(max(computes), 1)
        totals = [
            (_parse(task["finished_at"]) - _parse(task["started_at"])).total_seconds() * 1000
            for task in runs
        ]
        figures["refresh_statistics_task_p50_ms"] = round(statistics.median(totals), 1)

        url = "/api/v1/analytics/dashboard"
        summary = client.get(url).json()["summary"]
        assert summary["total_products"] == BATCHES * PRODUCTS_PER_BATCH, summary
        cached = _timed_gets(client, url, CACHED_REQUESTS, "HIT")
        figures["dashboard_cached_p50_ms"] = _p(cached, 50)
        figures["dashboard_cached_p95_ms"] = _p(cached, 95)

        # Each request follows a snapshot change (its NOTIFY drops the cached answer).
        def touch_snapshot() -> None:
            asyncio.run(_sql("UPDATE statistics_snapshots SET duration_ms = duration_ms"))

        uncached = _timed_gets(client, url, UNCACHED_REQUESTS, "MISS", touch_snapshot)
        figures["dashboard_uncached_p50_ms"] = _p(uncached, 50)
        figures["dashboard_uncached_p95_ms"] = _p(uncached, 95)

        def drop_snapshot() -> None:
            asyncio.run(_sql("DELETE FROM statistics_snapshots"))

        cold = _timed_gets(client, url, COLD_REQUESTS, "MISS", drop_snapshot)
        figures["dashboard_cold_no_snapshot_p50_ms"] = round(statistics.median(cold), 1)

        stats_url = f"/api/v1/analytics/batches/{BATCHES // 2}/statistics"
        client.get(stats_url).raise_for_status()
        stats_cached = _timed_gets(client, stats_url, CACHED_REQUESTS, "HIT")
        figures["batch_statistics_cached_p50_ms"] = _p(stats_cached, 50)

        def touch_batch() -> None:
            asyncio.run(_sql(f"UPDATE batches SET team = team WHERE id = {BATCHES // 2}"))

        stats_uncached = _timed_gets(client, stats_url, UNCACHED_REQUESTS, "MISS", touch_batch)
        figures["batch_statistics_uncached_p50_ms"] = _p(stats_uncached, 50)
    return figures


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name, value in run().items():
        print(f"{name:<45} {value}")
