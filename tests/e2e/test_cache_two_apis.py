"""Two real api processes (`python -m app`, uvicorn) over one database: a change made through
one of them, or straight in SQL, is never answered stale by the other's read cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.analytics.jobs import refresh_dashboard
from app.db import transaction
from tests.factories import shift_task_en
from tests.support import ApiProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_processes() -> Iterator[tuple[ApiProcess, ApiProcess]]:
    first, second = ApiProcess().start(), ApiProcess().start()
    try:
        first.wait_listening()
        second.wait_listening()
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture
async def apis(
    api_processes: tuple[ApiProcess, ApiProcess],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = api_processes
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as api_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as api_b,
    ):
        yield api_a, api_b


async def until_hit(api: httpx.AsyncClient, url: str, timeout: float = 15.0) -> httpx.Response:
    """Read until the answer comes from the cache (the process's LISTEN is up)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(url)
        assert response.status_code == 200, response.text
        if response.headers["x-cache"] == "HIT":
            return response
        assert time.monotonic() < deadline, f"{url} never served from the cache"
        await asyncio.sleep(0.05)


async def sql(statement: str, *, without_triggers: bool = False, **params: Any) -> None:
    async with transaction() as session:
        if without_triggers:  # as if a writer escaped the triggers (superuser only)
            await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(text(statement), params)


async def is_superuser() -> bool:
    async with transaction() as session:
        return bool(
            (
                await session.execute(
                    text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                )
            ).scalar_one()
        )


async def test_a_write_through_one_api_is_never_served_stale_by_the_other(apis):
    api_a, api_b = apis
    response = await api_a.post("/api/v1/batches", json=[shift_task_en(61, "2024-05-01")])
    assert response.status_code == 201, response.text
    batch_id = response.json()[0]["id"]
    url = f"/api/v1/batches/{batch_id}"
    await until_hit(api_a, url)
    await until_hit(api_b, url)

    for round_ in range(20):
        assert (await api_b.get(url)).headers["x-cache"] == "HIT"
        patched = await api_a.patch(url, json={"team": f"Team {round_}"})
        assert patched.status_code == 200, patched.text
        # Read through the other process right away: the write was committed before
        # the PATCH answered, so no cache may still hold the old team.
        seen_by_b = await api_b.get(url)
        assert seen_by_b.json()["team"] == f"Team {round_}"
        assert seen_by_b.headers["x-cache"] == "MISS"
        assert (await api_a.get(url)).json()["team"] == f"Team {round_}"


async def test_writes_from_either_side_or_sql_reach_every_cached_view(apis):
    api_a, api_b = apis
    response = await api_b.post("/api/v1/batches", json=[shift_task_en(71, "2024-05-02")])
    batch_id = response.json()[0]["id"]
    views = [
        f"/api/v1/batches/{batch_id}",
        "/api/v1/batches?batch_number=71",
        f"/api/v1/analytics/batches/{batch_id}/statistics",
    ]
    for api in (api_a, api_b):
        for view in views:
            await until_hit(api, view)

    added = await api_b.post(
        "/api/v1/products", json=[{"unique_code": "TW-1", "batch_id": batch_id}]
    )
    assert added.status_code == 201, added.text
    aggregated = await api_b.post(
        f"/api/v1/batches/{batch_id}/aggregate", json={"unique_code": "TW-1"}
    )
    assert aggregated.status_code == 200, aggregated.text
    detail, listing, stats = [(await api_a.get(view)).json() for view in views]
    assert [p["is_aggregated"] for p in detail["products"]] == [True]
    assert listing["items"][0]["aggregated_count"] == 1
    assert stats["production_stats"]["aggregation_rate"] == 100.0

    # An operator's SQL reaches both processes too.
    for api in (api_a, api_b):
        await until_hit(api, views[0])
    await sql("UPDATE batches SET nomenclature = 'From psql' WHERE id = :id", id=batch_id)
    for api in (api_a, api_b):
        assert (await api.get(views[0])).json()["nomenclature"] == "From psql"


async def test_the_cache_is_real_and_only_the_change_log_keeps_it_honest(apis):
    """A write that escapes the triggers stays invisible until a logged write follows."""
    if not await is_superuser():
        pytest.skip("session_replication_role needs a superuser")
    api_a, api_b = apis
    response = await api_a.post("/api/v1/batches", json=[shift_task_en(81, "2024-05-03")])
    batch_id = response.json()[0]["id"]
    url = f"/api/v1/batches/{batch_id}"
    await until_hit(api_b, url)

    await sql(
        "UPDATE batches SET team = 'Ghost' WHERE id = :id", without_triggers=True, id=batch_id
    )
    cached = await api_b.get(url)
    assert cached.headers["x-cache"] == "HIT"
    assert cached.json()["team"] == "Team A"  # served from memory: it is a cache

    await sql("UPDATE batches SET shift = '2' WHERE id = :id", id=batch_id)
    fresh = (await api_b.get(url)).json()
    assert (fresh["team"], fresh["shift"]) == ("Ghost", "2")


async def test_the_dashboard_follows_each_new_snapshot_in_both_processes(apis):
    api_a, api_b = apis
    await api_a.post("/api/v1/batches", json=[shift_task_en(91, "2024-05-04")])
    url = "/api/v1/analytics/dashboard"
    before = [(await until_hit(api, url)).json() for api in (api_a, api_b)]
    # Same figures; each may have made its own snapshot (two first reads at once both find
    # none to reuse), so not generated_at.
    assert {**before[0], "generated_at": None} == {**before[1], "generated_at": None}
    assert before[0]["summary"]["total_batches"] == 1

    # A write through one process: neither serves the old figures, snapshot or not.
    await api_b.post("/api/v1/batches", json=[shift_task_en(92, "2024-05-04")])
    for api in (api_a, api_b):
        assert (await api.get(url)).json()["summary"]["total_batches"] == 2

    await refresh_dashboard(force=True)  # what refresh_statistics does every 5 minutes
    for api in (api_a, api_b):
        after = await api.get(url)
        assert after.headers["x-cache"] == "MISS"
        assert after.json()["summary"]["total_batches"] == 2
        assert after.json()["generated_at"] > max(b["generated_at"] for b in before)
