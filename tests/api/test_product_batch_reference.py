"""products.batch_id -> batches.id: the statement-level triggers keep every foreign-key
guarantee (migration 0003), for any writer, not only the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.factories import add_codes, count_rows, create_batch
from tests.support import TEST_DATABASE_URL

DSN = TEST_DATABASE_URL.replace("+asyncpg", "")
FK = "products_batch_id_fkey"


@pytest.fixture
async def db() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(DSN)
    yield connection
    await connection.close()


async def test_insert_with_an_unknown_batch_fails_whole(client, db):
    batch = await create_batch(client)
    with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
        await db.execute(
            "INSERT INTO products (unique_code, batch_id) VALUES ('A', $1), ('B', 424242)",
            batch["id"],
        )
    assert caught.value.constraint_name == FK
    assert "Key (batch_id)=(424242)" in caught.value.detail
    assert await count_rows("products") == 0


async def test_moving_a_product_to_an_unknown_batch_fails(client, db):
    first, second = await create_batch(client, number=1), await create_batch(client, number=2)
    await add_codes(client, first["id"], ["A"])
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("UPDATE products SET batch_id = 424242 WHERE unique_code = 'A'")
    await db.execute("UPDATE products SET batch_id = $1 WHERE unique_code = 'A'", second["id"])
    assert await count_rows("products", f"batch_id = {second['id']}") == 1


async def test_deleting_or_truncating_batches_removes_their_products(client, db):
    doomed, kept = await create_batch(client, number=1), await create_batch(client, number=2)
    await add_codes(client, doomed["id"], ["D1", "D2"])
    await add_codes(client, kept["id"], ["K1"])
    await db.execute("DELETE FROM batches WHERE id = $1", doomed["id"])
    assert sorted(r[0] for r in await db.fetch("SELECT unique_code FROM products")) == ["K1"]
    await db.execute("TRUNCATE batches CASCADE")
    assert await count_rows("products") == 0


async def test_changing_a_batch_id_is_refused(client, db):
    batch = await create_batch(client)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("UPDATE batches SET id = 424242 WHERE id = $1", batch["id"])


async def test_delete_waits_for_an_open_insert_then_removes_its_products(client, db):
    batch = await create_batch(client)
    deleter = await asyncpg.connect(DSN)
    try:
        inserter = db.transaction()
        await inserter.start()
        await db.execute(
            "INSERT INTO products (unique_code, batch_id) VALUES ('LATE', $1)", batch["id"]
        )
        delete = asyncio.create_task(
            deleter.execute("DELETE FROM batches WHERE id = $1", batch["id"])
        )
        await asyncio.sleep(0.3)
        assert not delete.done()  # blocked by the insert's FOR KEY SHARE lock
        await inserter.commit()
        await asyncio.wait_for(delete, 10)
    finally:
        await deleter.close()
    assert await count_rows("products") == 0  # no orphan


async def test_insert_waits_for_an_open_delete_then_fails(client, db):
    batch = await create_batch(client)
    deleter = await asyncpg.connect(DSN)
    try:
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("DELETE FROM batches WHERE id = $1", batch["id"])
        insert = asyncio.create_task(
            db.execute(
                "INSERT INTO products (unique_code, batch_id) VALUES ('LATE', $1)", batch["id"]
            )
        )
        await asyncio.sleep(0.3)
        assert not insert.done()
        await deleting.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await asyncio.wait_for(insert, 10)
    finally:
        await deleter.close()
    assert await count_rows("products") == 0
