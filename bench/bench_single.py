"""Single-product figures: POST /products against the single-row INSERT floor.

The floor (pgbench, same connections count, a plain table of the products columns with the
same unique index) and the api are measured back to back on this machine. For reference the
same pgbench script also runs against the real `products` table (its triggers included).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.floors import prepare_floor_table, single_insert_floor
from bench.harness import Stack, support
from bench.load import post_json, run_load
from bench.targets import sizes

BATCH = {
    "batch_number": 1,
    "batch_date": "2025-01-01",
    "task_description": "Single-product bench",
    "work_center": "Line 1",
    "work_center_identifier": "WC-1",
    "shift": "1",
    "team": "A",
    "nomenclature": "Widget",
    "ekn_code": "EKN",
    "shift_start": "2025-01-01T08:00:00Z",
    "shift_end": "2025-01-01T20:00:00Z",
}


def run() -> dict[str, Any]:
    size = sizes()
    requests, connections = size["single_requests"], size["single_connections"]
    figures: dict[str, Any] = {"requests": requests, "connections": connections}
    dsn = support.TEST_DATABASE_URL
    with Stack(queues=("fast",)) as stack, stack.client() as client:
        response = client.post("/api/v1/batches", json=[BATCH])
        response.raise_for_status()
        batch_id = response.json()[0]["id"]

        def request(tag: str) -> Any:
            def build(n: int) -> bytes:
                body = json.dumps({"unique_code": f"ONE-{tag}-{n:08d}", "batch_id": batch_id})
                return post_json("/api/v1/products", body.encode())

            return build

        print("   single: warm-up", flush=True)
        asyncio.run(run_load("127.0.0.1", stack.port, request("warm"), 1_000, connections))
        print(f"   single: {requests} POST /products at {connections} connections", flush=True)
        result = asyncio.run(
            run_load("127.0.0.1", stack.port, request("run"), requests, connections)
        )
        assert result.statuses == {201: requests}, result.statuses
        figures["single_product_per_s"] = round(result.per_second)
        figures["single_product_p50_ms"] = round(result.p50_ms, 2)
        figures["single_product_p99_ms"] = round(result.percentile(99), 2)

        print("   single: floor (pgbench single-row INSERTs)", flush=True)
        asyncio.run(prepare_floor_table(dsn))
        floor = asyncio.run(
            single_insert_floor(
                dsn,
                table="bench_floor_products",
                batch_id=batch_id,
                clients=connections,
                seconds=size["floor_seconds"],
            )
        )
        figures["insert_floor_per_s"] = floor["per_s"]
        figures["floor_tool"] = floor["tool"]
        real = asyncio.run(
            single_insert_floor(
                dsn,
                table="products",
                batch_id=batch_id,
                clients=connections,
                seconds=size["floor_seconds"],
            )
        )
        figures["products_table_insert_per_s"] = real["per_s"]
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<40} {value}")
