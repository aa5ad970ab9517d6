"""Analytics (dashboard, batch statistics, comparison) against hand-computed figures, and the
read cache of this api process (hits, invalidation by any writer, listener loss)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from app.analytics.jobs import refresh_dashboard
from app.cache import PRUNE, read_cache
from app.config import get_settings
from app.db import transaction
from tests.factories import add_codes, aggregate, create_batches, parse_time, problem, shift_task_en

TODAY = dt.datetime.now(dt.UTC).date()  # tests run with TZ unset: UTC
EARLIER = TODAY - dt.timedelta(days=10)


async def sql(statement: str, **params: Any) -> None:
    async with transaction() as session:
        await session.execute(text(statement), params)


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def batch(number: int, date: dt.date, shift: str, wc: str, **overrides: Any) -> dict[str, Any]:
    return shift_task_en(
        number,
        date.isoformat(),
        shift=shift,
        work_center_identifier=wc,
        work_center=f"Line {wc}",
        **overrides,
    )


async def seed_plant(client: Any) -> dict[str, int]:
    """Four batches whose figures the dashboard tests compute by hand.

    A today, shift 1, WC-1, open, ends today 23:00: 4 products, 3 aggregated today
    B today, shift 2, WC-2, closed today:             2 products, 1 aggregated today
    C 10 days ago, shift 1, WC-1, open:                5 products, 2 aggregated 10 days ago
    D 10 days ago, shift 2, WC-1, closed 10 days ago:  no products
    """
    day = TODAY.isoformat()
    a, b, c, d = (
        item["id"]
        for item in await create_batches(
            client,
            [
                batch(
                    1,
                    TODAY,
                    "1",
                    "WC-1",
                    shift_start=f"{day}T00:00:00Z",
                    shift_end=f"{day}T23:00:00Z",
                ),
                batch(
                    2,
                    TODAY,
                    "2",
                    "WC-2",
                    shift_start=f"{day}T00:00:00Z",
                    shift_end=f"{day}T08:00:00Z",
                ),
                batch(3, EARLIER, "1", "WC-1"),
                batch(4, EARLIER, "2", "WC-1", is_closed=True),
            ],
        )
    )
    await add_codes(client, a, ["A1", "A2", "A3", "A4"])
    await add_codes(client, b, ["B1", "B2"])
    await add_codes(client, c, ["C1", "C2", "C3", "C4", "C5"])
    for code in ("A1", "A2", "A3"):
        await aggregate(client, a, code)
    await aggregate(client, b, "B1")
    await aggregate(client, c, "C1")
    await aggregate(client, c, "C2")
    assert (await client.post(f"/api/v1/batches/{b}/close")).status_code == 200
    await sql(
        "UPDATE products SET aggregated_at = now() - interval '10 days' WHERE batch_id = :c",
        c=c,
    )
    await sql("UPDATE batches SET closed_at = shift_end WHERE id = :d", d=d)
    return {"A": a, "B": b, "C": c, "D": d}


def figures(
    batches: int, active: int, products: int, aggregated: int, rate: float
) -> dict[str, Any]:
    return {
        "total_batches": batches,
        "active_batches": active,
        "closed_batches": batches - active,
        "total_products": products,
        "aggregated_products": aggregated,
        "aggregation_rate": rate,
    }


async def test_dashboard_figures(client):
    ids = await seed_plant(client)
    response = await client.get("/api/v1/analytics/dashboard")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"summary", "today", "by_shift", "top_work_centers", "generated_at"}
    assert body["summary"] == figures(4, 2, 11, 6, 54.5)

    today = body["today"]
    closing = today.pop("closing_today")
    assert today == {
        **figures(2, 1, 6, 4, 66.7),
        "date": TODAY.isoformat(),
        "aggregated_today": 4,
        "closed_today": 1,
    }
    assert [(c["id"], c["total_products"], c["aggregated_products"]) for c in closing] == [
        (ids["A"], 4, 3)
    ]
    assert closing[0]["aggregation_rate"] == 75.0
    assert closing[0]["work_center"]["identifier"] == "WC-1"

    assert body["by_shift"] == [
        {**figures(2, 2, 9, 5, 55.6), "shift": "1"},
        {**figures(2, 0, 2, 1, 50.0), "shift": "2"},
    ]
    assert [
        (w["identifier"], w["name"], w["total_batches"], w["aggregated_products"])
        for w in body["top_work_centers"]
    ] == [("WC-1", "Line WC-1", 3, 5), ("WC-2", "Line WC-2", 1, 1)]
    assert body["top_work_centers"][0] == {
        **figures(3, 2, 9, 5, 55.6),
        "id": body["top_work_centers"][0]["id"],
        "identifier": "WC-1",
        "name": "Line WC-1",
    }
    assert abs(parse_time(body["generated_at"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


async def test_dashboard_empty(client):
    body = (await client.get("/api/v1/analytics/dashboard")).json()
    assert body["summary"] == figures(0, 0, 0, 0, 0.0)
    assert body["by_shift"] == []
    assert body["top_work_centers"] == []
    assert body["today"]["closing_today"] == []


async def test_dashboard_reuses_its_snapshot_until_data_changes(client):
    ids = await seed_plant(client)
    first = (await client.get("/api/v1/analytics/dashboard")).json()

    # Nothing changed: the same snapshot answers (from memory once cached).
    again = await client.get("/api/v1/analytics/dashboard")
    assert again.json() == first
    assert again.headers["x-cache"] in ("MISS", "HIT")
    assert (await client.get("/api/v1/analytics/dashboard")).headers["x-cache"] == "HIT"

    # A write outdates the snapshot: the next read is recomputed, never stale.
    await aggregate(client, ids["A"], "A4")
    after_write = (await client.get("/api/v1/analytics/dashboard")).json()
    assert after_write["summary"]["aggregated_products"] == 7
    assert after_write["today"]["closing_today"][0]["aggregation_rate"] == 100.0
    assert after_write["generated_at"] > first["generated_at"]

    # refresh_statistics writes a new snapshot; its change drops the cached dashboard.
    _, duration_ms = await refresh_dashboard(force=True)
    assert duration_ms is not None
    assert duration_ms >= 0
    refreshed = (await client.get("/api/v1/analytics/dashboard")).json()
    assert refreshed["summary"] == after_write["summary"]
    assert refreshed["generated_at"] > after_write["generated_at"]


async def test_dashboard_recomputes_a_stale_snapshot(client):
    await seed_plant(client)
    await client.get("/api/v1/analytics/dashboard")
    # A snapshot from long ago (the scheduler was down): the next read recomputes it.
    await sql(
        "UPDATE statistics_snapshots SET data = jsonb_set(data, '{generated_at}', "
        "'\"2020-01-01T00:00:00Z\"') WHERE name = 'dashboard'"
    )
    await sql("DELETE FROM products WHERE unique_code = 'A4'")
    body = (await client.get("/api/v1/analytics/dashboard")).json()
    assert body["generated_at"] > "2021"
    assert body["summary"]["total_products"] == 10


async def test_batch_statistics(client):
    (created,) = await create_batches(client, [batch(7, EARLIER, "1", "WC-1")])
    batch_id = created["id"]
    await add_codes(client, batch_id, [f"S{i}" for i in range(5)])
    for code in ("S0", "S1", "S2"):
        await aggregate(client, batch_id, code)
    day = EARLIER.isoformat()
    for code, moment in (("S0", "08:10"), ("S1", "08:50"), ("S2", "10:05")):
        await sql(
            "UPDATE products SET aggregated_at = :at WHERE unique_code = :code",
            at=dt.datetime.fromisoformat(f"{day}T{moment}:00+00:00"),
            code=code,
        )
    await client.post(f"/api/v1/batches/{batch_id}/close")
    await sql(
        "UPDATE batches SET closed_at = shift_start + interval '9 hours 30 minutes' WHERE id = :id",
        id=batch_id,
    )

    response = await client.get(f"/api/v1/analytics/batches/{batch_id}/statistics")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"batch_info", "production_stats", "timeline"}
    assert body["production_stats"] == {
        "total_products": 5,
        "aggregated": 3,
        "remaining": 2,
        "aggregation_rate": 60.0,
    }
    assert body["timeline"] == [
        {"hour": f"{day}T08:00:00Z", "aggregated": 2, "cumulative": 2, "cumulative_rate": 40.0},
        {"hour": f"{day}T10:00:00Z", "aggregated": 1, "cumulative": 3, "cumulative_rate": 60.0},
    ]
    info = body["batch_info"]
    assert info["id"] == batch_id
    assert info["batch_number"] == 7
    assert info["is_closed"] is True
    assert info["work_center"]["identifier"] == "WC-1"
    assert info["time_to_close_seconds"] == 9.5 * 3600

    # The same answer at the batches path, with or without a trailing slash.
    for path in (
        f"/api/v1/batches/{batch_id}/statistics",
        f"/api/v1/batches/{batch_id}/statistics/",
    ):
        also = await client.get(path)
        assert also.status_code == 200, also.text
        assert also.json() == body


async def test_batch_statistics_of_an_empty_open_batch(client):
    (created,) = await create_batches(client, [batch(8, TODAY, "1", "WC-1")])
    body = (await client.get(f"/api/v1/batches/{created['id']}/statistics")).json()
    assert body["production_stats"] == {
        "total_products": 0,
        "aggregated": 0,
        "remaining": 0,
        "aggregation_rate": 0.0,
    }
    assert body["timeline"] == []
    assert body["batch_info"]["time_to_close_seconds"] is None


@pytest.mark.parametrize("prefix", ["/api/v1/analytics/batches", "/api/v1/batches"])
async def test_batch_statistics_bad_ids(client, prefix):
    body = problem(await client.get(f"{prefix}/424242/statistics"), 404)
    assert "424242" in body["detail"]
    problem(await client.get(f"{prefix}/0/statistics"), 422)
    problem(await client.get(f"{prefix}/{2**31}/statistics"), 422)


async def compare_fixture(client: Any) -> list[int]:
    """X: 4 of 5 aggregated, closed 1 h after shift start; Y: 3 of 5; Z: no products."""
    ids = [
        item["id"]
        for item in await create_batches(
            client, [batch(n, EARLIER, "1", "WC-1") for n in (11, 12, 13)]
        )
    ]
    for batch_id, prefix, done in zip(ids[:2], ("X", "Y"), (4, 3), strict=True):
        codes = [f"{prefix}{i}" for i in range(5)]
        await add_codes(client, batch_id, codes)
        for code in codes[:done]:
            await aggregate(client, batch_id, code)
    await client.post(f"/api/v1/batches/{ids[0]}/close")
    await sql(
        "UPDATE batches SET closed_at = shift_start + interval '1 hour' WHERE id = :id", id=ids[0]
    )
    return ids


async def test_compare_batches(client):
    x, y, z = await compare_fixture(client)
    response = await client.post("/api/v1/analytics/compare-batches", json={"batch_ids": [y, x]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["batch_id"] for c in body["comparison"]] == [y, x]  # the order asked
    assert [
        (c["total_products"], c["aggregated"], c["remaining"], c["aggregation_rate"])
        for c in body["comparison"]
    ] == [(5, 3, 2, 60.0), (5, 4, 1, 80.0)]
    assert [c["time_to_close_seconds"] for c in body["comparison"]] == [None, 3600.0]
    assert body["comparison"][1]["batch_number"] == 11
    assert body["comparison"][1]["is_closed"]
    assert body["average"] == {
        "total_products": 5.0,
        "aggregated": 3.5,
        "remaining": 1.5,
        "aggregation_rate": 70.0,
        "time_to_close_seconds": 3600.0,
    }

    three = (
        await client.post("/api/v1/analytics/compare-batches", json={"batch_ids": [x, y, z]})
    ).json()
    assert three["comparison"][2]["aggregation_rate"] == 0.0
    # (80 + 60 + 0) / 3 = 46.67; products (5 + 5 + 0) / 3 = 3.33
    assert three["average"]["aggregation_rate"] == 46.7
    assert three["average"]["total_products"] == 3.3
    assert three["average"]["aggregated"] == 2.3


async def test_compare_batches_bad_input(client):
    x, y, _ = await compare_fixture(client)
    url = "/api/v1/analytics/compare-batches"
    for ids in ([], [x]):
        problem(await client.post(url, json={"batch_ids": ids}), 422, ["body", "batch_ids"])
    too_many = problem(
        await client.post(url, json={"batch_ids": list(range(1, 52))}), 422, ["body", "batch_ids"]
    )
    assert "50" in too_many["errors"][0]["msg"]

    duplicate = problem(
        await client.post(url, json={"batch_ids": [x, y, x]}), 422, ["body", "batch_ids", 2]
    )
    assert str(x) in duplicate["detail"][0]["msg"]

    unknown = problem(
        await client.post(url, json={"batch_ids": [x, 999999, 888888]}),
        404,
        ["body", "batch_ids", 1],
    )
    assert "999999" in unknown["detail"]
    assert "888888" in unknown["detail"]
    assert [e["loc"] for e in unknown["errors"]] == [
        ["body", "batch_ids", 1],
        ["body", "batch_ids", 2],
    ]

    problem(await client.post(url, json={"batch_ids": [0, x]}), 422, ["body", "batch_ids", 0])
    problem(await client.post(url, json={"batch_ids": [x, "y"]}), 422, ["body", "batch_ids", 1])
    problem(await client.post(url, json={"batch_ids": [x, 2**31]}), 422, ["body", "batch_ids", 1])
    problem(await client.post(url, json={"ids": [x, y]}), 422)
    problem(await client.post(url, json={"batch_ids": [x, y], "extra": 1}), 422, ["body", "extra"])
    problem(await client.post(url, json=[x, y]), 422)
    problem(
        await client.post(url, content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )


# --- the read cache of this process -------------------------------------------------------


async def cache_ready() -> None:
    await wait_for(lambda: read_cache.enabled)


async def test_batch_reads_are_cached_and_dropped_by_any_write(client):
    await cache_ready()
    (created,) = await create_batches(client, [batch(21, TODAY, "1", "WC-1")])
    url = f"/api/v1/batches/{created['id']}"
    assert (await client.get(url)).headers["x-cache"] == "MISS"
    hit = await client.get(url)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json()["team"] == "Team A"

    # A write through this api: the next read is fresh.
    assert (await client.patch(url, json={"team": "Team B"})).status_code == 200
    fresh = await client.get(url)
    assert fresh.headers["x-cache"] == "MISS"
    assert fresh.json()["team"] == "Team B"

    # A write that bypasses the api (a worker, an operator's psql): fresh as well.
    await client.get(url)
    await sql("UPDATE batches SET team = 'Team C' WHERE id = :id", id=created["id"])
    assert (await client.get(url)).json()["team"] == "Team C"
    await sql("INSERT INTO products (unique_code, batch_id) VALUES ('P-1', :id)", id=created["id"])
    assert [p["unique_code"] for p in (await client.get(url)).json()["products"]] == ["P-1"]
    await sql("UPDATE work_centers SET name = 'Renamed'")
    assert (await client.get(url)).json()["work_center"]["name"] == "Renamed"


async def notifications_applied(client) -> None:
    """Wait until this api has applied every invalidation committed so far (the TRUNCATE
    between tests, the writes above): a late one would rightly drop what is cached next."""
    listener = client.app.state.cache_listener  # it lives in the app's own event loop
    assert await asyncio.to_thread(client.blocking_portal.call, listener.barrier)


async def test_cached_list_and_statistics_follow_writes(client):
    await cache_ready()
    first, second = await create_batches(
        client, [batch(31, TODAY, "1", "WC-1"), batch(32, TODAY, "1", "WC-1")]
    )
    listing = "/api/v1/batches?limit=1"
    stats = f"/api/v1/analytics/batches/{first['id']}/statistics"
    await notifications_applied(client)
    await client.get(listing)
    await client.get(stats)
    assert (await client.get(listing)).headers["x-cache"] == "HIT"
    assert (await client.get(stats)).headers["x-cache"] == "HIT"

    # Products of a batch outside the page leave the page cached...
    await add_codes(client, second["id"], ["Q-1"])
    await notifications_applied(client)
    assert (await client.get(listing)).headers["x-cache"] == "HIT"
    assert (await client.get(stats)).headers["x-cache"] == "HIT"
    # ...products of a batch on it do not.
    await add_codes(client, first["id"], ["Q-2"])
    page = await client.get(listing)
    assert page.headers["x-cache"] == "MISS"
    assert page.json()["items"][0]["product_count"] == 1
    assert (await client.get(stats)).json()["production_stats"]["total_products"] == 1
    # A new batch changes the list (its total), whatever page is cached.
    await create_batches(client, [batch(33, TODAY, "1", "WC-1")])
    assert (await client.get(listing)).json()["total"] == 3


async def test_cache_bypassed_while_the_listener_is_down(client):
    await cache_ready()
    (created,) = await create_batches(client, [batch(41, TODAY, "1", "WC-1")])
    url = f"/api/v1/batches/{created['id']}"
    await client.get(url)
    assert (await client.get(url)).headers["x-cache"] == "HIT"

    # Kill the LISTEN connection from the server side.
    await sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'production-control-cache' AND datname = current_database()"
    )
    await wait_for(lambda: not read_cache.enabled, timeout=5)
    assert len(read_cache) == 0
    await sql("UPDATE batches SET team = 'Changed while deaf' WHERE id = :id", id=created["id"])
    response = await client.get(url)
    assert response.headers["x-cache"] == "BYPASS"
    assert response.json()["team"] == "Changed while deaf"

    # It re-subscribes by itself and caches again.
    await cache_ready()
    await client.get(url)
    assert (await client.get(url)).headers["x-cache"] == "HIT"


async def connection_of_its_own() -> asyncpg.Connection:
    """As an operator's psql: outside the app's pool and its sessions."""
    return await asyncpg.connect(get_settings().sync_database_url)


async def cached_batch(client: Any, number: int) -> str:
    (created,) = await create_batches(client, [batch(number, TODAY, "1", "WC-1")])
    url = f"/api/v1/batches/{created['id']}"
    await notifications_applied(client)
    await client.get(url)
    assert (await client.get(url)).headers["x-cache"] == "HIT"
    return url


async def test_a_write_on_a_connection_of_its_own_reaches_the_cache(client):
    await cache_ready()
    url = await cached_batch(client, 61)
    batch_id = int(url.rsplit("/", 1)[1])
    psql = await connection_of_its_own()
    try:
        await psql.execute(
            "INSERT INTO products (unique_code, batch_id) VALUES ('R-1', $1)", batch_id
        )
        fresh = await client.get(url)
        assert fresh.headers["x-cache"] == "MISS"
        assert [p["unique_code"] for p in fresh.json()["products"]] == ["R-1"]
        assert (await client.get(url)).headers["x-cache"] == "HIT"
        await psql.execute("DELETE FROM products WHERE batch_id = $1", batch_id)
        assert (await client.get(url)).json()["products"] == []
        await psql.execute("UPDATE batches SET team = 'From psql' WHERE id = $1", batch_id)
        assert (await client.get(url)).json()["team"] == "From psql"
    finally:
        await psql.close()


async def test_a_transaction_committing_after_a_later_one_is_not_missed(client):
    """Transaction ids are handed out in start order, not commit order: the log is read by
    snapshot, so an early transaction committing late is still seen."""
    await cache_ready()
    url = await cached_batch(client, 62)
    batch_id = int(url.rsplit("/", 1)[1])
    early, late = await connection_of_its_own(), await connection_of_its_own()
    try:
        await early.execute("BEGIN")
        await early.execute("UPDATE batches SET team = 'Early' WHERE id = $1", batch_id)
        # In progress while the cache reads the log: nothing to see yet.
        assert (await client.get(url)).headers["x-cache"] == "HIT"
        await late.execute("UPDATE work_centers SET name = 'Late'")  # a larger id, committed
        after_late = await client.get(url)
        assert after_late.json()["work_center"]["name"] == "Late"
        assert after_late.json()["team"] == "Team A"
        assert (await client.get(url)).headers["x-cache"] == "HIT"
        await early.execute("COMMIT")
        assert (await client.get(url)).json()["team"] == "Early"
    finally:
        await early.close()
        await late.close()


async def test_log_rows_a_reader_had_not_read_are_never_pruned_silently(client):
    await cache_ready()
    url = await cached_batch(client, 63)
    listener = client.app.state.cache_listener

    # This process's own pruning (rows every reader has read) keeps what it cached.
    listener.KEEP_SECONDS = 0.0
    await asyncio.to_thread(client.blocking_portal.call, listener.prune)
    assert (await client.get(url)).headers["x-cache"] == "HIT"

    # A write whose log row another process prunes before this one read it: whatever it
    # cached may be stale, so it forgets everything.
    batch_id = int(url.rsplit("/", 1)[1])
    psql = await connection_of_its_own()
    try:
        await psql.execute("UPDATE batches SET team = 'Unseen' WHERE id = $1", batch_id)
        past_it = await psql.fetchval(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        await psql.execute(PRUNE, past_it)
        fresh = await client.get(url)
        assert fresh.headers["x-cache"] == "MISS"
        assert fresh.json()["team"] == "Unseen"
        assert (await client.get(url)).headers["x-cache"] == "HIT"
        # The log emptied by hand after a write: the same.
        await psql.execute("UPDATE batches SET team = 'Truncated' WHERE id = $1", batch_id)
        await psql.execute("TRUNCATE cache_changes")
        assert (await client.get(url)).json()["team"] == "Truncated"
    finally:
        await psql.close()


async def test_not_found_is_not_cached(client):
    await cache_ready()
    problem(await client.get("/api/v1/batches/1"), 404)
    (created,) = await create_batches(client, [batch(51, TODAY, "1", "WC-1")])
    assert created["id"] == 1
    assert (await client.get("/api/v1/batches/1")).status_code == 200
