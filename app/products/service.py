"""Product registration: one code, or a set-based bulk insert of up to 100,000."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg
import msgspec
from msgspec import UNSET
from sqlalchemy import and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import driver_connection
from app.errors import BusinessRuleViolation, Conflict, InputInvalid, Loc, NotFound
from app.models import Batch, Product
from app.products.schemas import (
    MAX_BULK_PRODUCTS,
    PRODUCT_KEYS,
    BulkProductsResult,
    ProductInput,
    ProductOut,
    SkippedProduct,
)
from app.schemas import pick

BatchRef = int | tuple[int, dt.date]


class ResolvedProduct(msgspec.Struct, gc=False):
    unique_code: str
    batch: BatchRef


def resolve_product(item: ProductInput, loc: Loc) -> ResolvedProduct:
    # Fast path for the bulk shape `{unique_code, batch_id}` (100,000 per request); anything
    # else goes through the full synonym and completeness rules below.
    code = item.unique_code
    if (
        type(code) is str
        and type(item.batch_id) is int
        and item.УникальныйКодПродукта is UNSET
        and item.batch_number is UNSET
        and item.НомерПартии is UNSET
        and item.batch_date is UNSET
        and item.ДатаПартии is UNSET
        and code.strip() == code
        and code
    ):
        return ResolvedProduct(code, item.batch_id)
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for field, names in PRODUCT_KEYS.items():
        value, key = pick(item, names, loc)
        if key is not None:
            values[field], keys[field] = value, key
    # A missing key is named in the language the client writes in.
    russian = any(key != PRODUCT_KEYS[field][0] for field, key in keys.items())

    def missing(field: str) -> Loc:
        return [*loc, PRODUCT_KEYS[field][-1] if russian else field]

    if "unique_code" not in values:
        raise InputInvalid.at(missing("unique_code"), "required field is missing", "missing")
    code = values["unique_code"].strip()
    if "batch_id" in values:
        if "batch_number" in values or "batch_date" in values:
            extra = keys.get("batch_number") or keys["batch_date"]
            raise InputInvalid.at(
                [*loc, extra], "send either batch_id or batch_number + batch_date"
            )
        return ResolvedProduct(code, values["batch_id"])
    absent = [f for f in ("batch_number", "batch_date") if f not in values]
    if len(absent) == 2:
        raise InputInvalid.at(
            missing("batch_number") if russian else missing("batch_id"),
            "required field is missing (send batch_id, or batch_number + batch_date)",
            "missing",
        )
    if absent:
        raise InputInvalid.at(missing(absent[0]), "required with the other batch key", "missing")
    return ResolvedProduct(code, (values["batch_number"], values["batch_date"]))


def not_found_message(ref: BatchRef) -> str:
    if isinstance(ref, int):
        return f"Batch not found (id {ref})"
    return f"Batch not found (number {ref[0]}, date {ref[1].isoformat()})"


class BatchState(NamedTuple):
    id: int
    is_closed: bool


async def resolve_batches(
    session: AsyncSession, refs: Sequence[BatchRef]
) -> dict[BatchRef, BatchState]:
    """Map each batch reference to an existing batch; unknown ones are left out.

    The batches are share-locked: one being closed concurrently waits for this transaction,
    so no product lands in a batch after it was closed.
    """
    ids = sorted({r for r in refs if isinstance(r, int)})
    pairs = sorted({r for r in refs if isinstance(r, tuple)})
    found: dict[BatchRef, BatchState] = {}
    if ids:
        rows = await session.execute(
            select(Batch.id, Batch.is_closed).where(Batch.id.in_(ids)).with_for_update(read=True)
        )
        found.update({r.id: BatchState(r.id, r.is_closed) for r in rows.all()})
    if pairs:
        rows = await session.execute(
            text(
                """
                SELECT b.id, b.is_closed, b.batch_number, b.batch_date FROM batches b
                JOIN unnest(CAST(:numbers AS int[]), CAST(:dates AS date[])) AS k(n, d)
                  ON b.batch_number = k.n AND b.batch_date = k.d
                FOR SHARE OF b
                """
            ),
            {"numbers": [p[0] for p in pairs], "dates": [p[1] for p in pairs]},
        )
        found.update(
            {(r.batch_number, r.batch_date): BatchState(r.id, r.is_closed) for r in rows.all()}
        )
    return found


def closed_batch_message(batch_id: int) -> str:
    return f"Batch {batch_id} is closed"


# One statement, one round trip: find the batch (share-locked, so it cannot be closed
# before this commits), insert the code unless it exists or the batch is closed, and say
# which failed. The conflicting row's owner comes back from the same statement when it was
# visible to it (a code inserted by a transaction that commits meanwhile is looked up
# afterwards).
_ADD_ONE = """
WITH batch AS ({batch} FOR SHARE),
inserted AS (
    INSERT INTO products (unique_code, batch_id) SELECT $1, id FROM batch WHERE NOT is_closed
    ON CONFLICT (unique_code) DO NOTHING
    RETURNING id, batch_id, is_aggregated, aggregated_at, created_at
)
SELECT (SELECT id FROM batch) AS batch_found, i.id, i.batch_id, i.is_aggregated,
       i.aggregated_at, i.created_at,
       CASE WHEN i.id IS NULL THEN (SELECT p.batch_id FROM products p WHERE p.unique_code = $1)
       END AS owner,
       (SELECT is_closed FROM batch) AS closed
FROM (SELECT) AS one LEFT JOIN inserted i ON true
"""
_ADD_BY_ID = _ADD_ONE.format(batch="SELECT id, is_closed FROM batches WHERE id = $2")
_ADD_BY_NUMBER = _ADD_ONE.format(
    batch="SELECT id, is_closed FROM batches WHERE batch_number = $2 AND batch_date = $3"
)


async def add_product(connection: asyncpg.Connection, item: ResolvedProduct) -> ProductOut:
    """Register one code.

    The busiest write of the api (one code per request from every client of the
    specification), hence the driver directly: outside a transaction the statement is its
    own implicit transaction (no BEGIN/COMMIT round trips); inside one (the caller's, under
    an Idempotency-Key) it joins it.
    """
    row = (
        await connection.fetchrow(_ADD_BY_ID, item.unique_code, item.batch)
        if isinstance(item.batch, int)
        else await connection.fetchrow(_ADD_BY_NUMBER, item.unique_code, *item.batch)
    )
    assert row is not None
    if row[0] is None:
        raise NotFound(not_found_message(item.batch))
    if row[7]:
        raise BusinessRuleViolation(closed_batch_message(row[0]))
    if row[1] is None:
        owner = row[6]
        if owner is None:  # the conflicting insert committed while this statement ran
            owner = await connection.fetchval(
                "SELECT batch_id FROM products WHERE unique_code = $1", item.unique_code
            )
        raise Conflict(f"Product {item.unique_code} already exists (batch {owner})")
    return ProductOut(
        id=row[1],
        unique_code=item.unique_code,
        batch_id=row[2],
        is_aggregated=row[3],
        aggregated_at=row[4],
        created_at=row[5],
    )


async def add_products_bulk(
    session: AsyncSession, items: Sequence[ResolvedProduct]
) -> BulkProductsResult:
    """Insert every new code in one statement; report the ones skipped and why."""
    if not 1 <= len(items) <= MAX_BULK_PRODUCTS:
        raise InputInvalid.at(
            ["body"], f"send 1..{MAX_BULK_PRODUCTS} products per request, not {len(items)}"
        )
    batches = await resolve_batches(session, [item.batch for item in items])
    skipped: list[SkippedProduct] = []
    codes: list[str] = []
    targets: list[int] = []
    seen: set[str] = set()
    for item in items:
        if item.unique_code in seen:
            skipped.append(SkippedProduct(item.unique_code, "duplicate in request"))
            continue
        seen.add(item.unique_code)
        batch = batches.get(item.batch)
        if batch is None:
            skipped.append(SkippedProduct(item.unique_code, not_found_message(item.batch)))
            continue
        if batch.is_closed:
            skipped.append(SkippedProduct(item.unique_code, closed_batch_message(batch.id)))
            continue
        codes.append(item.unique_code)
        targets.append(batch.id)
    created = 0
    if codes:
        # The driver directly, inside the session's transaction: for 100,000 rows the ORM's
        # parameter processing costs as much as PostgreSQL's insert itself. Only the codes
        # that were not inserted come back, and only when there are some: returning all
        # 100,000 would mean 100,000 result records for the garbage collector.
        driver = await driver_connection(session)
        row = await driver.fetchrow(
            """
            WITH inserted AS (
                INSERT INTO products (unique_code, batch_id)
                SELECT * FROM unnest($1::varchar[], $2::int[])
                ON CONFLICT (unique_code) DO NOTHING
                RETURNING unique_code
            ), created AS (SELECT count(*) AS n FROM inserted)
            SELECT n, CASE WHEN n = cardinality($1::varchar[]) THEN '{}'::varchar[] ELSE
                ARRAY(SELECT unnest($1::varchar[]) EXCEPT SELECT unique_code FROM inserted) END
            FROM created
            """,
            codes,
            targets,
        )
        assert row is not None
        created, existing = row[0], set(row[1])
        if existing:
            skipped.extend(SkippedProduct(c, "already exists") for c in codes if c in existing)
    return BulkProductsResult(created=created, skipped=skipped)


async def require_batch(session: AsyncSession, batch_id: int) -> None:
    found = (await session.execute(select(Batch.id).where(Batch.id == batch_id))).first()
    if found is None:
        raise NotFound(not_found_message(batch_id))


async def list_products(
    session: AsyncSession,
    *,
    batch_id: int | None,
    is_aggregated: bool | None,
    unique_code: str | None,
    offset: int,
    limit: int,
) -> tuple[list[ProductOut], int]:
    conditions: list[Any] = []
    if batch_id is not None:
        conditions.append(Product.batch_id == batch_id)
    if is_aggregated is not None:
        conditions.append(Product.is_aggregated.is_(is_aggregated))
    if unique_code is not None:
        conditions.append(Product.unique_code == unique_code)
    where = and_(True, *conditions)
    total = (
        await session.execute(select(func.count()).select_from(Product).where(where))
    ).scalar_one()
    rows = await session.execute(
        select(Product).where(where).order_by(Product.id).offset(offset).limit(limit)
    )
    return msgspec.convert(rows.scalars().all(), list[ProductOut], from_attributes=True), total
