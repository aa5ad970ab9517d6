"""The figures `make bench` judges, their units, floors and targets, and the sizes.

A target is a comparison on `value` or on `ratio` (value / floor, measured in the same run).
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable
from typing import Any, NamedTuple

# Sizes every suite reads (python -m bench --scale / --set NAME=N change them).
SIZES: dict[str, int] = {
    "single_requests": 10_000,  # POST /products, one code each, 8 connections
    "single_connections": 8,
    "floor_seconds": 5,  # pgbench duration for the single-insert floor
    "codes": 100_000,  # bulk add and aggregate-async
    "ingest_batches": 1_000,
    "webhook_burst": 1_000,
    "webhook_trickle": 100,
}


def sizes() -> dict[str, int]:
    """The sizes of this run (inside a suite's interpreter)."""
    return {**SIZES, **json.loads(os.environ.get("BENCH_SIZES", "{}"))}


class Target(NamedTuple):
    suite: str
    key: str  # the suite's raw figure
    unit: str
    on: str  # "value" or "ratio"
    compare: str  # "<", "<=", ">="
    limit: float | None  # None: reported, no target
    floor: str | None = None  # the suite's raw floor figure


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
}

TARGETS: tuple[Target, ...] = (
    Target("single", "single_product_per_s", "req/s", "ratio", ">=", 0.20, "insert_floor_per_s"),
    Target("single", "single_product_p99_ms", "ms", "value", "<", 20),
    Target("single", "single_product_p50_ms", "ms", "value", "<", None),
    Target(
        "single", "products_table_insert_per_s", "rows/s", "ratio", ">=", None, "insert_floor_per_s"
    ),
    Target("core", "ingest_1000_batches_s", "s", "ratio", "<=", 2.0, "ingest_floor_s"),
    Target("core", "bulk_add_100k_products_s", "s", "value", "<", 1.0),
    Target(
        "core", "aggregate_async_100k_end_to_end_s", "s", "ratio", "<=", 1.5, "aggregate_floor_s"
    ),
    Target("core", "enqueue_to_start_p95_ms", "ms", "value", "<", 20),
    Target("webhooks", "deliveries_per_s", "deliveries/s", "value", ">=", 500),
    # A feed's 1,000 events are one outbox row: its fan-out must not stall the burst (a json
    # payload parsed once per item once held it back 4 s).
    Target("webhooks", "burst_post_to_last_delivery_s", "s", "value", "<", 2.0),
    Target("webhooks", "burst_latency_p50_ms", "ms", "value", "<", None),
    Target("webhooks", "event_to_delivery_p95_ms", "ms", "value", "<", None),
    Target("files", "report_xlsx_100k_products.seconds", "s", "value", "<", 5),
    Target("files", "report_xlsx_100k_products.worker_peak_rss_mb", "MB", "value", "<", 300),
    Target("files", "report_pdf_10k_products.seconds", "s", "value", "<", None),
    Target("files", "import_xlsx_50k_rows.seconds", "s", "value", "<", None),
    Target("files", "export_csv_100k_batches.seconds", "s", "value", "<", None),
    Target("files", "export_xlsx_100k_batches.seconds", "s", "value", "<", None),
    Target("analytics", "dashboard_cached_p50_ms", "ms", "value", "<", None),
    Target("analytics", "dashboard_uncached_p50_ms", "ms", "value", "<", None),
    Target("analytics", "dashboard_cold_no_snapshot_p50_ms", "ms", "value", "<", None),
    Target("analytics", "refresh_statistics_task_p50_ms", "ms", "value", "<", None),
)


def _lookup(figures: dict[str, Any], key: str) -> Any:
    value: Any = figures
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def judge(suite: str, figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows of one suite's raw figures."""
    rows = []
    for target in (t for t in TARGETS if t.suite == suite):
        value = _lookup(figures, target.key)
        if value is None:
            continue
        floor = _lookup(figures, target.floor) if target.floor else None
        ratio = round(value / floor, 3) if floor else None
        judged = ratio if target.on == "ratio" else value
        verdict = None
        text = None
        if target.limit is not None:
            text = f"{target.on} {target.compare} {target.limit}"
            verdict = judged is not None and _OPS[target.compare](judged, target.limit)
        rows.append(
            {
                "figure": target.key,
                "unit": target.unit,
                "value": value,
                "floor": floor,
                "ratio": ratio,
                "target": text,
                "pass": verdict,
            }
        )
    return rows
