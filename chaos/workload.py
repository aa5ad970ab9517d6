"""The mixed client workload of the fault run, and the ledger of what the service accepted.

Every request that creates something or starts work carries an Idempotency-Key; a transport
error, a 5xx or a 409 "in progress" is retried with the same key and body against the
other api replica, the way a careful client retries. Some successful requests are sent
once more on purpose: the replay must come back identical and create nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.outbox import EVENTS

API = "/api/v1"
FINAL = ("SUCCESS", "FAILURE", "CANCELLED")
RETRY_FOR_SECONDS = 90.0
REPLAY_SHARE = 0.1


@dataclass
class Ledger:
    """What the clients sent and what the service acknowledged."""

    operations: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[tuple[float, str, int]] = field(default_factory=list)
    retried_requests: int = 0
    replays: int = 0
    replay_mismatches: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    batch_ids: set[int] = field(default_factory=set)
    codes: dict[str, int] = field(default_factory=dict)  # registered code -> batch id
    unaggregated: dict[int, list[str]] = field(default_factory=dict)  # batch -> free codes
    aggregated_sync: set[str] = field(default_factory=set)
    tasks: dict[str, str] = field(default_factory=dict)  # accepted task id -> kind
    async_codes: dict[str, list[str]] = field(default_factory=dict)  # task id -> codes
    import_rows: dict[str, int] = field(default_factory=dict)  # task id -> data rows sent
    subscribed_at: dict[str, float] = field(default_factory=dict)  # receiver path -> unix time


class Client:
    """One careful client: idempotency keys, retries across replicas, the ledger."""

    def __init__(self, urls: list[str], ledger: Ledger, rng: random.Random) -> None:
        self.urls = urls
        self.ledger = ledger
        self.rng = rng
        self.http = httpx.AsyncClient(timeout=30.0)

    async def close(self) -> None:
        await self.http.aclose()

    async def send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """Send until a final answer (< 500, not "in progress"); None if none came in time."""
        self.ledger.operations[operation] += 1
        key = uuid.uuid4().hex
        all_headers = {"Idempotency-Key": key, **(headers or {})}
        start = self.rng.randrange(len(self.urls))
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        for attempt in itertools.count():
            url = self.urls[(start + attempt) % len(self.urls)] + API + path
            if attempt:
                self.ledger.retried_requests += 1
                await asyncio.sleep(min(0.1 * attempt, 1.0))
            if time.monotonic() > deadline:
                self.ledger.unexpected.append(f"{operation}: no answer in {RETRY_FOR_SECONDS} s")
                return None
            try:
                response = await self.http.request(
                    method, url, json=json, content=content, headers=all_headers
                )
            except httpx.TransportError:
                continue  # that replica is down or restarting: the other one, same key
            self.ledger.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.ledger.server_errors.append((time.time(), operation, response.status_code))
                continue
            if response.status_code == 409 and "progress" in response.text:
                continue  # the first attempt is still running
            if response.status_code < 300 and self.rng.random() < REPLAY_SHARE:
                await self._replay(operation, method, url, json, content, all_headers, response)
            return response
        raise AssertionError("unreachable")

    async def _replay(
        self,
        operation: str,
        method: str,
        url: str,
        json: Any,
        content: bytes | None,
        headers: dict[str, str],
        first: httpx.Response,
    ) -> None:
        self.ledger.replays += 1
        try:
            again = await self.http.request(
                method, url, json=json, content=content, headers=headers
            )
        except httpx.TransportError:
            return  # the replica went down in between; nothing to compare
        same = again.status_code == first.status_code and again.content == first.content
        if not same or again.headers.get("Idempotent-Replayed") != "true":
            self.ledger.replay_mismatches.append(
                f"{operation}: {first.status_code} then {again.status_code} "
                f"(Idempotent-Replayed: {again.headers.get('Idempotent-Replayed')})"
            )

    def expect(self, operation: str, response: httpx.Response | None, status: int) -> bool:
        if response is None:
            return False
        if response.status_code != status:
            self.ledger.unexpected.append(
                f"{operation}: {response.status_code} {response.text[:300]}"
            )
            return False
        return True


def shift_task(number: int, date: dt.date) -> dict[str, Any]:
    """A 1C shift task in Russian keys whose shift ends in the future (stays open)."""
    return {
        "СтатусЗакрытия": False,
        "ПредставлениеЗаданияНаСмену": f"Задание на смену {number}",
        "РабочийЦентр": "Линия розлива 1",
        "Смена": "1",
        "Бригада": "Бригада №4",
        "НомерПартии": number,
        "ДатаПартии": date.isoformat(),
        "Номенклатура": "Вода питьевая 0,5 л",
        "КодЕКН": "456678",
        "ИдентификаторРЦ": "RC-1",
        "ДатаВремяНачалаСмены": f"{date.isoformat()}T08:00:00+05:00",
        "ДатаВремяОкончанияСмены": f"{date.isoformat()}T20:00:00+05:00",
    }


class Workload:
    """The operations, chosen at random by weight, by several concurrent clients."""

    WEIGHTS = {
        "ingest": 3,
        "product": 6,
        "products_bulk": 2,
        "aggregate": 5,
        "aggregate_async": 2,
        "report": 1,
        "import": 1,
        "export": 1,
    }

    def __init__(self, urls: list[str], ledger: Ledger, seed: int) -> None:
        self.urls = urls
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.numbers = itertools.count(1000 + seed % 1000 * 100_000)
        self.codes = itertools.count(1)
        self.batch_date = dt.date.today() + dt.timedelta(days=2)

    def next_code(self) -> str:
        return f"010460{next(self.codes):010d}"

    async def run(self, clients: int, until: float) -> None:
        await asyncio.gather(*(self._loop(n, until) for n in range(clients)))

    async def _loop(self, n: int, until: float) -> None:
        client = Client(self.urls, self.ledger, random.Random(self.rng.random()))
        names, weights = zip(*self.WEIGHTS.items(), strict=True)
        try:
            while time.monotonic() < until:
                operation = client.rng.choices(names, weights)[0]
                await getattr(self, f"op_{operation}")(client)
                await asyncio.sleep(0.02)
        finally:
            await client.close()

    def _open_batch(self, client: Client) -> int | None:
        ids = sorted(self.ledger.batch_ids)
        return client.rng.choice(ids) if ids else None

    async def op_ingest(self, client: Client, size: int | None = None) -> list[int]:
        tasks = [
            shift_task(next(self.numbers), self.batch_date)
            for _ in range(size or client.rng.randint(1, 5))
        ]
        response = await client.send("ingest", "POST", "/batches", json=tasks)
        if not client.expect("ingest", response, 201):
            return []
        assert response is not None
        ids = [batch["id"] for batch in response.json()]
        self.ledger.batch_ids.update(ids)
        return ids

    def _registered(self, batch_id: int, codes: list[str]) -> None:
        """Codes the clients may pick for aggregation (each is taken once)."""
        for code in codes:
            self.ledger.codes[code] = batch_id
        self.ledger.unaggregated.setdefault(batch_id, []).extend(codes)

    async def op_product(self, client: Client) -> None:
        batch_id = self._open_batch(client)
        if batch_id is None:
            return
        code = self.next_code()
        response = await client.send(
            "product", "POST", "/products", json={"unique_code": code, "batch_id": batch_id}
        )
        if client.expect("product", response, 201):
            self._registered(batch_id, [code])

    async def op_products_bulk(self, client: Client) -> None:
        batch_id = self._open_batch(client)
        if batch_id is not None:
            codes = await self.register(client, batch_id, client.rng.randint(100, 1000))
            self._registered(batch_id, codes)

    async def register(self, client: Client, batch_id: int, count: int) -> list[str]:
        """`count` new codes in one bulk request; the codes created."""
        codes = [self.next_code() for _ in range(count)]
        response = await client.send(
            "products_bulk",
            "POST",
            "/products",
            json=[{"unique_code": code, "batch_id": batch_id} for code in codes],
        )
        if not client.expect("products_bulk", response, 201):
            return []
        assert response is not None
        body = response.json()
        if body["created"] != len(codes) or body["skipped"]:
            self.ledger.unexpected.append(f"products_bulk: {body['created']} of {len(codes)}")
        for code in codes:
            self.ledger.codes[code] = batch_id
        return codes

    def _take_codes(self, client: Client, most: int) -> tuple[int, list[str]] | None:
        """Codes of one batch that nobody has asked to aggregate yet (each code only once)."""
        candidates = [b for b, codes in self.ledger.unaggregated.items() if codes]
        if not candidates:
            return None
        batch_id = client.rng.choice(candidates)
        free = self.ledger.unaggregated[batch_id]
        taken, self.ledger.unaggregated[batch_id] = free[:most], free[most:]
        return batch_id, taken

    async def op_aggregate(self, client: Client) -> None:
        taken = self._take_codes(client, 1)
        if taken is None:
            return
        batch_id, (code,) = taken
        response = await client.send(
            "aggregate", "POST", f"/batches/{batch_id}/aggregate", json={"unique_code": code}
        )
        if client.expect("aggregate", response, 200):
            self.ledger.aggregated_sync.add(code)

    async def op_aggregate_async(
        self, client: Client, batch_codes: tuple[int, list[str]] | None = None
    ) -> str | None:
        taken = batch_codes or self._take_codes(client, 3000)
        if taken is None:
            return None
        batch_id, codes = taken
        response = await client.send(
            "aggregate_async",
            "POST",
            f"/batches/{batch_id}/aggregate-async",
            json={"unique_codes": codes},
        )
        task_id = self._accepted("aggregate_async", "aggregate_products", client, response)
        if task_id:
            self.ledger.async_codes[task_id] = codes
        return task_id

    def _accepted(
        self, operation: str, kind: str, client: Client, response: httpx.Response | None
    ) -> str | None:
        if not client.expect(operation, response, 202):
            return None
        assert response is not None
        task_id = str(response.json()["task_id"])
        self.ledger.tasks[task_id] = kind
        return task_id

    async def op_report(self, client: Client) -> None:
        batch_id = self._open_batch(client)
        if batch_id is None:
            return
        report_format = client.rng.choice(["excel", "pdf"])
        response = await client.send(
            "report", "POST", f"/batches/{batch_id}/reports", json={"format": report_format}
        )
        self._accepted("report", "generate_report", client, response)

    async def op_import(self, client: Client) -> None:
        rows = [shift_task(next(self.numbers), self.batch_date) for _ in range(5)]
        header = ",".join(rows[0])
        lines = [",".join(f'"{value}"' for value in row.values()) for row in rows]
        boundary = uuid.uuid4().hex  # fixed per operation: a retry sends identical bytes
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="smena.csv"\r\nContent-Type: text/csv\r\n\r\n'
            + "\n".join([header, *lines])
            + f"\r\n--{boundary}--\r\n"
        ).encode()
        response = await client.send(
            "import",
            "POST",
            "/batches/import",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        task_id = self._accepted("import", "import_batches", client, response)
        if task_id:
            self.ledger.import_rows[task_id] = len(rows)

    async def op_export(self, client: Client) -> None:
        response = await client.send(
            "export", "POST", "/batches/export", json={"format": "csv", "filters": {}}
        )
        self._accepted("export", "export_batches", client, response)

    async def subscribe(self, client: Client, url: str) -> None:
        """Subscribe `url` to every event; noted with the time its 201 arrived (committed)."""
        response = await client.send(
            "subscribe",
            "POST",
            "/webhooks",
            json={
                "url": url,
                "events": list(EVENTS),
                "secret_key": "chaos-secret",
                "retry_count": 10,
                "timeout": 5,
            },
        )
        if client.expect("subscribe", response, 201):
            self.ledger.subscribed_at[httpx.URL(url).path] = time.time()
