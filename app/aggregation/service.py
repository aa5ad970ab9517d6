"""Aggregation rules, applied set-based (one UPDATE per chunk, never a loop of statements).

A code is aggregated into batch B when it exists, belongs to B, is not yet aggregated and
B is open. The failures, with the exact sentences clients see:
  unknown code        -> "Product not found: X"                                 (404 single)
  another batch       -> "Product X belongs to batch 8, not batch 7"            (400 single)
  already aggregated  -> "Product X already aggregated: unique code already used at T" (400)
  batch closed        -> "Batch 7 is closed"                                    (400)
A code repeated in one request is aggregated once; its repeats fail as already aggregated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.aggregation.schemas import AggregationError, AggregationSummary
from app.db import driver_connection
from app.errors import BusinessRuleViolation, NotFound
from app.models import Batch, Product
from app.outbox import emit_event
from app.products.schemas import ProductOut
from app.products.service import closed_batch_message


def utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def already_aggregated(code: str, at: dt.datetime) -> str:
    return f"Product {code} already aggregated: unique code already used at {utc_text(at)}"


async def lock_open_batch(session: AsyncSession, batch_id: int) -> None:
    """404 if the batch is missing, 400 if closed; holds a share lock so it stays open."""
    is_closed = (
        await session.execute(
            select(Batch.is_closed).where(Batch.id == batch_id).with_for_update(read=True)
        )
    ).scalar_one_or_none()
    if is_closed is None:
        raise NotFound(f"Batch not found (id {batch_id})")
    if is_closed:
        raise BusinessRuleViolation(closed_batch_message(batch_id))


async def aggregate_codes(
    session: AsyncSession, batch_id: int, codes: Sequence[str]
) -> tuple[list[str], list[AggregationError]]:
    """Aggregate `codes` into an open, locked batch; returns (aggregated, errors) in input order."""
    now = dt.datetime.now(dt.UTC)
    distinct = list(dict.fromkeys(codes))
    # On the driver, inside the session's transaction: the UPDATE reports only the codes it
    # did not aggregate (normally none) instead of returning every aggregated row, which
    # for a 20,000-code chunk cost as much as the UPDATE itself in result processing.
    driver = await driver_connection(session)
    row = await driver.fetchrow(
        """
        WITH updated AS (
            UPDATE products p SET is_aggregated = true, aggregated_at = $1
            FROM unnest($3::varchar[]) AS c(code)
            WHERE p.unique_code = c.code AND p.batch_id = $2 AND NOT p.is_aggregated
            RETURNING p.unique_code
        ), n AS (SELECT count(*) AS n FROM updated)
        SELECT CASE WHEN n = cardinality($3::varchar[]) THEN '{}'::varchar[] ELSE
            ARRAY(SELECT unnest($3::varchar[]) EXCEPT SELECT unique_code FROM updated) END
        FROM n
        """,
        now,
        batch_id,
        distinct,
    )
    assert row is not None
    others = sorted(row[0])
    missed = set(others)
    state = {}
    if others:
        rows = await session.execute(
            select(Product.unique_code, Product.batch_id, Product.aggregated_at).where(
                Product.unique_code.in_(others)
            )
        )
        state = {code: (owner, at) for code, owner, at in rows.all()}
    aggregated: list[str] = []
    errors: list[AggregationError] = []
    first_seen: set[str] = set()
    for code in codes:
        if code not in missed and code not in first_seen:
            first_seen.add(code)
            aggregated.append(code)
        elif code not in missed:
            errors.append(AggregationError(code, already_aggregated(code, now)))
        elif code not in state:
            errors.append(AggregationError(code, f"Product not found: {code}"))
        elif state[code][0] != batch_id:
            errors.append(
                AggregationError(
                    code, f"Product {code} belongs to batch {state[code][0]}, not batch {batch_id}"
                )
            )
        else:
            errors.append(AggregationError(code, already_aggregated(code, state[code][1] or now)))
    if aggregated:
        await emit_event(
            session,
            "product_aggregated",
            {
                "batch_id": batch_id,
                "count": len(aggregated),
                "unique_codes": aggregated,
                "aggregated_at": utc_text(now),
            },
        )
    return aggregated, errors


async def aggregate_one(session: AsyncSession, batch_id: int, code: str) -> ProductOut:
    await lock_open_batch(session, batch_id)
    aggregated, errors = await aggregate_codes(session, batch_id, [code])
    if errors:
        message = errors[0].error
        missing = message.startswith("Product not found")
        raise NotFound(message) if missing else BusinessRuleViolation(message)
    product = (
        await session.execute(select(Product).where(Product.unique_code == aggregated[0]))
    ).scalar_one()
    return msgspec.convert(product, ProductOut, from_attributes=True)


async def aggregate_list(
    session: AsyncSession, batch_id: int, codes: Sequence[str]
) -> AggregationSummary:
    await lock_open_batch(session, batch_id)
    aggregated, errors = await aggregate_codes(session, batch_id, codes)
    return AggregationSummary(
        batch_id=batch_id,
        total=len(codes),
        aggregated=len(aggregated),
        failed=len(errors),
        errors=errors,
    )
