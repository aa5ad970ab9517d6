"""Batch rules: 1C ingest with the duplicate/overwrite rule, listing, updates, closing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Row, Select, and_, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Bundle

from app.batches.schemas import (
    BatchEvent,
    BatchFeed,
    BatchFields,
    BatchFilters,
    BatchListItem,
    BatchOut,
    ProductBrief,
    WorkCenterRef,
)
from app.db import while_executing
from app.errors import Conflict, FieldError, InputInvalid, NotFound
from app.models import Batch, Product, WorkCenter
from app.outbox import emit_events

BATCH_COLUMNS = (
    "is_closed",
    "task_description",
    "shift",
    "team",
    "batch_number",
    "batch_date",
    "nomenclature",
    "ekn_code",
    "shift_start",
    "shift_end",
)


# One round trip: create or rename the work centers and return every one asked for. The
# second branch reads rows the upsert left alone (same name); both see the statement's
# snapshot, so a center another transaction created after it began is read by the caller's
# fallback query instead. Sorted input keeps concurrent feeds from deadlocking.
_UPSERT_WORK_CENTERS = text(
    """
    WITH input AS (
        SELECT * FROM unnest(CAST(:identifiers AS varchar[]), CAST(:names AS varchar[]))
            AS i(identifier, name)
    ), upserted AS (
        INSERT INTO work_centers (identifier, name)
        SELECT identifier, name FROM input ORDER BY identifier
        ON CONFLICT (identifier) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
        WHERE work_centers.name IS DISTINCT FROM EXCLUDED.name
        RETURNING id, identifier, name
    )
    SELECT id, identifier, name FROM upserted
    UNION ALL
    SELECT w.id, w.identifier, w.name FROM work_centers w JOIN input USING (identifier)
    WHERE NOT EXISTS (SELECT FROM upserted u WHERE u.identifier = w.identifier)
    """
)


async def upsert_work_centers(
    session: AsyncSession, pairs: dict[str, str]
) -> dict[str, WorkCenterRef]:
    """identifier -> work center, creating or renaming them (the last name sent wins)."""
    if not pairs:
        return {}
    ordered = sorted(pairs.items())
    rows = await session.execute(
        _UPSERT_WORK_CENTERS,
        {"identifiers": [i for i, _ in ordered], "names": [n for _, n in ordered]},
    )
    centers = {row.identifier: WorkCenterRef(row.id, row.identifier, row.name) for row in rows}
    if len(centers) < len(pairs):  # created concurrently, after this statement's snapshot
        late = await session.execute(
            select(WorkCenter.id, WorkCenter.identifier, WorkCenter.name).where(
                WorkCenter.identifier.in_([i for i in pairs if i not in centers])
            )
        )
        centers.update({r.identifier: WorkCenterRef(r.id, r.identifier, r.name) for r in late})
    return centers


# The columns a feed writes, in the order of the composite type batch_row (migration 0008):
# the rows go in as one array of records, not one array per column.
INSERTED_COLUMNS = (
    "is_closed",
    "closed_at",
    "task_description",
    "work_center_id",
    "shift",
    "team",
    "batch_number",
    "batch_date",
    "nomenclature",
    "ekn_code",
    "shift_start",
    "shift_end",
)
_INSERT_SQL = (
    f"INSERT INTO batches ({', '.join(INSERTED_COLUMNS)}) "
    "SELECT * FROM unnest(CAST(:rows AS batch_row[]))"
)
# What the database decides; every other field of the response is the value sent, as
# stored (text stripped, times as UTC instants): cheaper than reading 1,000 rows back.
_RETURNED = " RETURNING id, batch_number, batch_date, closed_at, created_at, updated_at"
# The 1C re-send rule: overwrite every field; a batch re-sent closed keeps its close time.
_SKIP_SQL = " ON CONFLICT ON CONSTRAINT uq_batches_number_date DO NOTHING"
_OVERWRITE_SQL = (
    " ON CONFLICT ON CONSTRAINT uq_batches_number_date DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in INSERTED_COLUMNS if name != "closed_at")
    + ", closed_at = CASE WHEN EXCLUDED.is_closed"
    " THEN COALESCE(batches.closed_at, EXCLUDED.closed_at) END, updated_at = now()"
)


def _duplicate(feed: BatchFeed, index: int, message: str) -> FieldError:
    return FieldError(loc=feed.loc(index, "batch_number"), msg=message, type="duplicate")


async def create_batches(
    session: AsyncSession, feed: BatchFeed, *, overwrite: bool
) -> tuple[list[BatchOut], int]:
    """Insert a 1C feed; returns the batches in input order and how many were new.

    Without `overwrite` any (batch_number, batch_date) already present, or sent twice, is a
    409 and nothing is written (the caller's transaction rolls back).
    """
    c = feed.columns
    keys = list(zip(c["batch_number"], c["batch_date"], strict=True))
    if len(set(keys)) < len(keys):
        first: dict[tuple[int, dt.date], int] = {}
        for index, key in enumerate(keys):
            if key in first:
                raise Conflict(
                    f"Batch {key[0]} of {key[1].isoformat()} appears twice in the request "
                    f"(items {first[key]} and {index})",
                    [_duplicate(feed, index, "duplicate of an earlier item in this request")],
                )
            first[key] = index

    # The last name sent for a work center wins.
    centers = await upsert_work_centers(
        session, dict(zip(c["work_center_identifier"], c["work_center_name"], strict=True))
    )
    # Overwriting needs the rows it replaces (created vs updated, closed just now); a plain
    # feed learns of duplicates from the insert itself and reads them only to name them.
    existing = await _existing_batches(session, keys, lock=True) if overwrite else {}

    now = dt.datetime.now(dt.UTC)
    stored = {
        **c,
        "closed_at": [now if closed else None for closed in c["is_closed"]],
        "work_center_id": [centers[identifier].id for identifier in c["work_center_identifier"]],
    }
    rows = list(zip(*(stored[name] for name in INSERTED_COLUMNS), strict=True))
    products = await _products_of(session, [row.id for row in existing.values()])
    # One statement over one array of records: a 1000-row VALUES list costs more to compile
    # than to execute. The response and the events are built while PostgreSQL inserts; the
    # four columns it decides are filled in when it answers.
    result, (batches, events) = await while_executing(
        session.execute(
            text(_INSERT_SQL + (_OVERWRITE_SQL if overwrite else _SKIP_SQL) + _RETURNED),
            {"rows": rows},
        ),
        lambda: _unsaved(c, centers, now),
    )
    inserted = {
        (number, date): (batch_id, closed_at, created_at, updated_at)
        for batch_id, number, date, closed_at, created_at, updated_at in result.all()
    }
    if len(inserted) < len(keys):  # only without overwrite: these exist already
        taken = await _existing_batches(session, [k for k in keys if k not in inserted])
        duplicates = [index for index, key in enumerate(keys) if key in taken]
        number, date = keys[duplicates[0]]
        raise Conflict(
            f"Batch {number} of {date.isoformat()} already exists"
            + (f" (and {len(duplicates) - 1} more)" if len(duplicates) > 1 else "")
            + "; send ?on_conflict=update to overwrite",
            [_duplicate(feed, index, "batch already exists") for index in duplicates],
        )
    for batch, event in zip(batches, events, strict=True):
        batch_id, closed_at, created_at, updated_at = inserted[
            (batch.batch_number, batch.batch_date)
        ]
        batch.id = event.id = event.batch_id = batch_id
        batch.closed_at = event.closed_at = closed_at
        batch.created_at = event.created_at = created_at
        batch.updated_at = event.updated_at = updated_at
        if batch_id in products:  # an overwritten batch keeps its products
            batch.products = products[batch_id]

    if not existing:
        await emit_events(session, "batch_created", events)
        return batches, len(batches)
    created = [e for e in events if (e.batch_number, e.batch_date) not in existing]
    updated = [e for e in events if (e.batch_number, e.batch_date) in existing]
    closed_now = [
        e for e in updated if e.is_closed and not existing[(e.batch_number, e.batch_date)].is_closed
    ]
    await emit_events(session, "batch_created", created)
    await emit_events(session, "batch_updated", updated)
    await emit_events(session, "batch_closed", closed_now)
    return batches, len(created)


def _unsaved(
    columns: dict[str, list[Any]], centers: dict[str, WorkCenterRef], now: dt.datetime
) -> tuple[list[BatchOut], list[BatchEvent]]:
    """The response and event data of a feed from the values sent, as stored (times as UTC
    instants); id, closed_at, created_at and updated_at are placeholders until the insert
    returns them."""
    batches, events = [], []
    for row in zip(*(columns[name] for name in _SENT), strict=True):
        fields: dict[str, Any] = dict(zip(_SENT, row, strict=True))
        fields["work_center"] = centers[fields.pop("work_center_identifier")]
        fields["shift_start"] = fields["shift_start"].astimezone(dt.UTC)
        fields["shift_end"] = fields["shift_end"].astimezone(dt.UTC)
        fields.update(id=0, closed_at=None, created_at=now, updated_at=now)
        batches.append(BatchOut(**fields, products=[]))
        events.append(BatchEvent(**fields, batch_id=0))
    return batches, events


# The fields of a batch response taken from the values sent; the work center by identifier.
_SENT = (*BATCH_COLUMNS, "work_center_identifier")


async def _existing_batches(
    session: AsyncSession, keys: Sequence[tuple[int, dt.date]], *, lock: bool = False
) -> dict[tuple[int, dt.date], Any]:
    """(batch_number, batch_date) -> (id, is_closed) of the batches already stored."""
    rows = await session.execute(
        text(
            """
            SELECT b.id, b.batch_number, b.batch_date, b.is_closed FROM batches b
            JOIN unnest(CAST(:numbers AS int[]), CAST(:dates AS date[])) AS k(n, d)
              ON b.batch_number = k.n AND b.batch_date = k.d
            """
            + (" FOR UPDATE OF b" if lock else "")
        ),
        {"numbers": [k[0] for k in keys], "dates": [k[1] for k in keys]},
    )
    return {(row.batch_number, row.batch_date): row for row in rows.all()}


async def _products_of(
    session: AsyncSession, batch_ids: Sequence[int]
) -> dict[int, list[ProductBrief]]:
    """batch id -> its products in id order, one query for all the batches."""
    products: dict[int, list[ProductBrief]] = {batch_id: [] for batch_id in batch_ids}
    if not batch_ids:
        return products
    rows = await session.execute(
        text(
            "SELECT batch_id, id, unique_code, is_aggregated, aggregated_at FROM products "
            "WHERE batch_id = ANY(CAST(:ids AS int[])) ORDER BY id"
        ),
        {"ids": list(batch_ids)},
    )
    # Positional: a batch may hold 100,000 products; about 10 times faster than convert.
    for batch_id, id_, code, aggregated, aggregated_at in rows.all():
        products[batch_id].append(ProductBrief(id_, code, aggregated, aggregated_at))
    return products


def event_data(batch: BatchOut | BatchListItem) -> dict[str, Any]:
    data = msgspec.to_builtins(batch)
    data.pop("products", None)
    data["batch_id"] = data["id"]
    return data


def _batch_select() -> Select[*tuple[Any, ...]]:
    """Rows named as BatchBase's fields, the work center nested as `work_center`: they
    convert as they are (msgspec.convert(..., from_attributes=True))."""
    work_center: Bundle[Any] = Bundle(
        "work_center", WorkCenter.id, WorkCenter.identifier, WorkCenter.name
    )
    return select(*Batch.__table__.columns, work_center).join(
        WorkCenter, Batch.work_center_id == WorkCenter.id
    )


def _with(row: Row[Any], **extra: Any) -> dict[str, Any]:
    """A batch row with the fields its response adds (products, or product counts)."""
    return {**row._mapping, **extra}


async def load_batches(session: AsyncSession, ids: Sequence[int]) -> list[BatchOut]:
    """Full batch objects (with products) in the order of `ids`, in two queries."""
    if not ids:
        return []
    rows = (await session.execute(_batch_select().where(Batch.id.in_(ids)))).all()
    products = await _products_of(session, ids)
    by_id = {}
    for row in rows:
        batch = msgspec.convert(_with(row, products=[]), BatchOut, from_attributes=True)
        batch.products = products[row.id]  # as built: convert would copy every brief again
        by_id[row.id] = batch
    return [by_id[i] for i in ids if i in by_id]


async def get_batch(session: AsyncSession, batch_id: int) -> BatchOut:
    found = await load_batches(session, [batch_id])
    if not found:
        raise NotFound(f"Batch not found (id {batch_id})")
    return found[0]


def _filter_conditions(filters: BatchFilters) -> list[Any]:
    conditions: list[Any] = []
    if filters.is_closed is not None:
        conditions.append(Batch.is_closed.is_(filters.is_closed))
    if filters.batch_number is not None:
        conditions.append(Batch.batch_number == filters.batch_number)
    if filters.batch_date is not None:
        conditions.append(Batch.batch_date == filters.batch_date)
    if filters.batch_date_from is not None:
        conditions.append(Batch.batch_date >= filters.batch_date_from)
    if filters.batch_date_to is not None:
        conditions.append(Batch.batch_date <= filters.batch_date_to)
    if filters.work_center_id is not None:
        conditions.append(Batch.work_center_id == filters.work_center_id)
    if filters.shift is not None:
        conditions.append(Batch.shift == filters.shift)
    if filters.nomenclature is not None:
        conditions.append(Batch.nomenclature == filters.nomenclature)
    return conditions


def filtered_batches(filters: BatchFilters) -> Select[*tuple[Any, ...]]:
    """The batches a filter set selects, ordered by id (shared by the list and export)."""
    return _batch_select().where(and_(True, *_filter_conditions(filters))).order_by(Batch.id)


async def list_batches(
    session: AsyncSession, filters: BatchFilters, offset: int, limit: int
) -> tuple[list[BatchListItem], int]:
    conditions = _filter_conditions(filters)
    total = (
        await session.execute(
            select(func.count()).select_from(Batch).where(and_(True, *conditions))
        )
    ).scalar_one()
    rows = (await session.execute(filtered_batches(filters).offset(offset).limit(limit))).all()
    return await _list_items(session, rows), total


async def _list_items(session: AsyncSession, rows: Sequence[Row[Any]]) -> list[BatchListItem]:
    """List-shaped batches: product counts from one grouped query, never one per batch."""
    ids = [row.id for row in rows]
    counts = {
        batch_id: (count, aggregated)
        for batch_id, count, aggregated in (
            await session.execute(
                select(Product.batch_id, func.count(), func.count().filter(Product.is_aggregated))
                .where(Product.batch_id.in_(ids))
                .group_by(Product.batch_id)
            )
        ).all()
    }
    items = []
    for row in rows:
        count, aggregated = counts.get(row.id, (0, 0))
        items.append(_with(row, product_count=count, aggregated_count=aggregated))
    return msgspec.convert(items, list[BatchListItem], from_attributes=True)


async def update_batch(session: AsyncSession, batch_id: int, item: BatchFields) -> BatchOut:
    batch = (
        await session.execute(select(Batch).where(Batch.id == batch_id).with_for_update())
    ).scalar_one_or_none()
    if batch is None:
        raise NotFound(f"Batch not found (id {batch_id})")
    fields = item.values
    was_closed = batch.is_closed

    start = fields.get("shift_start", batch.shift_start)
    end = fields.get("shift_end", batch.shift_end)
    if end < start:
        key = item.keys.get("shift_end") or item.keys["shift_start"]
        raise InputInvalid.at(
            [*item.loc, key], "shift end must not be before shift start", "shift_order"
        )

    number = fields.get("batch_number", batch.batch_number)
    date = fields.get("batch_date", batch.batch_date)
    if (number, date) != (batch.batch_number, batch.batch_date):
        clash = (
            await session.execute(
                select(Batch.id).where(
                    Batch.batch_number == number, Batch.batch_date == date, Batch.id != batch_id
                )
            )
        ).scalar_one_or_none()
        if clash is not None:
            key = item.keys.get("batch_number") or item.keys["batch_date"]
            raise Conflict(
                f"Batch {number} of {date.isoformat()} already exists (id {clash})",
                [FieldError(loc=[*item.loc, key], msg="batch already exists", type="duplicate")],
            )

    if "work_center_identifier" in fields:
        wc_name = fields.get("work_center_name")
        if wc_name is None:
            current = await session.get(WorkCenter, batch.work_center_id)
            existing = (
                await session.execute(
                    select(WorkCenter.name).where(
                        WorkCenter.identifier == fields["work_center_identifier"]
                    )
                )
            ).scalar_one_or_none()
            wc_name = existing or (current.name if current else fields["work_center_identifier"])
        centers = await upsert_work_centers(session, {fields["work_center_identifier"]: wc_name})
        batch.work_center_id = centers[fields["work_center_identifier"]].id
    elif "work_center_name" in fields:
        await session.execute(
            update(WorkCenter)
            .where(WorkCenter.id == batch.work_center_id)
            .values(name=fields["work_center_name"])
        )

    for column in BATCH_COLUMNS:
        if column in fields:
            setattr(batch, column, fields[column])
    if "is_closed" in fields:
        if fields["is_closed"] and not was_closed:
            batch.closed_at = dt.datetime.now(dt.UTC)
        elif not fields["is_closed"]:
            batch.closed_at = None
    batch.updated_at = dt.datetime.now(dt.UTC)
    await session.flush()

    result = await get_batch(session, batch_id)
    await emit_events(session, "batch_updated", [event_data(result)])
    if result.is_closed and not was_closed:
        await emit_events(session, "batch_closed", [event_data(result)])
    return result


async def close_batch(session: AsyncSession, batch_id: int) -> BatchOut:
    return await update_batch(
        session,
        batch_id,
        BatchFields(values={"is_closed": True}, keys={"is_closed": "is_closed"}, loc=["body"]),
    )


async def close_expired_batches(session: AsyncSession, now: dt.datetime | None = None) -> list[int]:
    """Close every open batch whose shift has ended; one batch_closed event each."""
    moment = now or dt.datetime.now(dt.UTC)
    closed = (
        (
            await session.execute(
                update(Batch)
                .where(Batch.is_closed.is_(False), Batch.shift_end < moment)
                .values(is_closed=True, closed_at=moment, updated_at=moment)
                .returning(Batch.id)
            )
        )
        .scalars()
        .all()
    )
    ids = sorted(closed)
    if ids:
        batches = await load_batches_brief(session, ids)
        await emit_events(session, "batch_closed", [event_data(b) for b in batches])
    return ids


async def load_batches_brief(session: AsyncSession, ids: Sequence[int]) -> list[BatchListItem]:
    """List-shaped batches (counts, no product arrays), e.g. for events about many batches."""
    rows = (
        await session.execute(_batch_select().where(Batch.id.in_(ids)).order_by(Batch.id))
    ).all()
    return await _list_items(session, rows)
