"""Webhook figures: deliveries per second and event -> delivery latency.

The real path: POST /batches in the api (uvicorn) writes batch_created events to the outbox,
the relay fans them out to webhook_deliveries, and a `webhooks` worker group with 8 threads
POSTs them, signed, to a local HTTP receiver (127.0.0.1).

* burst: one POST of 1,000 shift tasks -> 1,000 pending deliveries at once; deliveries per
  second is measured at the receiver, first to last arrival, and end to end from the POST;
* trickle: 100 single-batch POSTs at ~20/s, each event's latency = arrival at the receiver -
  the event's `created_at` (both on this machine's clock); p50/p95 (also for the burst).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time
from typing import Any

import httpx

from bench.harness import Stack
from bench.targets import sizes
from tests.webhook_receiver import Received, Receiver

BURST = sizes()["webhook_burst"]
TRICKLE = sizes()["webhook_trickle"]
TRICKLE_INTERVAL_S = 0.05
WORKER_THREADS = 8


def _shift_tasks(count: int, start: int) -> list[dict[str, Any]]:
    return [
        {
            "batch_number": n,
            "batch_date": "2025-03-01",
            "task_description": f"Bench {n}",
            "work_center": "Line 1",
            "work_center_identifier": "WC-1",
            "shift": "1",
            "team": "A",
            "nomenclature": "Widget",
            "ekn_code": "EKN",
            "shift_start": "2025-03-01T08:00:00Z",
            "shift_end": "2025-03-01T20:00:00Z",
        }
        for n in range(start, start + count)
    ]


def _latencies_ms(received: list[Received]) -> list[float]:
    return [
        (r.at - dt.datetime.fromisoformat(r.json["created_at"]).timestamp()) * 1000
        for r in received
    ]


def _percentiles(values: list[float]) -> tuple[float, float]:
    return round(statistics.median(values), 1), round(statistics.quantiles(values, n=20)[18], 1)


def _wait(receiver: Receiver, path: str, count: int, timeout: float = 300) -> list[Received]:
    deadline = time.monotonic() + timeout
    while len(receiver.requests(path)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(receiver.requests(path))} of {count} deliveries arrived")
        time.sleep(0.01)
    return receiver.requests(path)


def _failed_deliveries(client: httpx.Client, webhook_id: int) -> int:
    log = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params={"status": "failed"})
    return int(log.json()["total"])


def run() -> dict[str, Any]:
    os.environ["WORKER_CONCURRENCY_WEBHOOKS"] = str(WORKER_THREADS)
    receiver = Receiver().start()
    figures: dict[str, Any] = {"worker_threads": WORKER_THREADS}
    try:
        with Stack(queues=("webhooks",)) as stack, stack.client() as client:
            response = client.post(
                "/api/v1/webhooks",
                json={"url": receiver.url("/hook"), "events": ["batch_created"], "secret_key": "k"},
            )
            response.raise_for_status()
            webhook_id = response.json()["id"]
            # warm-up: worker boot, connection pools, prepared statements
            client.post("/api/v1/batches", json=_shift_tasks(20, 900_000)).raise_for_status()
            _wait(receiver, "/hook", 20)
            receiver.reset()

            print(f"   webhooks: burst of {BURST} events", flush=True)
            started = time.time()
            client.post("/api/v1/batches", json=_shift_tasks(BURST, 1)).raise_for_status()
            burst = sorted(_wait(receiver, "/hook", BURST), key=lambda r: r.at)
            first, last = burst[0].at, burst[-1].at
            figures["burst_deliveries"] = BURST
            figures["deliveries_per_s"] = round((BURST - 1) / (last - first), 1)
            figures["burst_post_to_last_delivery_s"] = round(last - started, 3)
            figures["burst_latency_p50_ms"], figures["burst_latency_p95_ms"] = _percentiles(
                _latencies_ms(burst)
            )
            receiver.reset()

            print(f"   webhooks: trickle of {TRICKLE} events at ~20/s", flush=True)
            for n in range(TRICKLE):
                client.post("/api/v1/batches", json=_shift_tasks(1, 500_000 + n)).raise_for_status()
                time.sleep(TRICKLE_INTERVAL_S)
            trickle = _wait(receiver, "/hook", TRICKLE)
            figures["trickle_events"] = TRICKLE
            figures["event_to_delivery_p50_ms"], figures["event_to_delivery_p95_ms"] = _percentiles(
                _latencies_ms(trickle)
            )
            figures["failed_deliveries"] = _failed_deliveries(client, webhook_id)
    finally:
        receiver.stop()
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<40} {value}")
