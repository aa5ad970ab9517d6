"""A minimal HTTP/1.1 keep-alive load generator on asyncio streams.

httpx spends ~0.3 ms of CPU per request; on a 2-core machine the client would take the
cores the api is being measured on. Requests here are pre-encoded bytes and responses are
read by Content-Length, which costs a few microseconds each.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    statuses: dict[int, int]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)


def post_json(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connection(
    host: str,
    port: int,
    requests: Callable[[int], bytes],
    counter: list[int],
    total: int,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while counter[0] < total:
            n = counter[0]
            counter[0] += 1
            started = time.perf_counter()
            writer.write(requests(n))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run_load(
    host: str, port: int, requests: Callable[[int], bytes], total: int, connections: int
) -> LoadResult:
    """Send `total` requests (`requests(n)` builds the n-th) over `connections` connections."""
    counter = [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(host, port, requests, counter, total, latencies, statuses)
            for _ in range(connections)
        )
    )
    return LoadResult(total, time.perf_counter() - started, latencies, statuses)
