"""products.batch_id -> batches.id checked once per statement instead of once per row

A FOREIGN KEY runs its check query once per inserted row: for a 100,000-code bulk add that
is 100,000 lookups of the same batch, 0.27 s of a 0.75 s insert. These triggers keep the
same guarantees, set-based:

- INSERT into products: one query per statement over the inserted rows (the transition
  table the cache-invalidation trigger already captures) locks their distinct batches
  FOR KEY SHARE, exactly as the foreign key does, and fails with SQLSTATE 23503 naming
  `products_batch_id_fkey` if one is missing. The lock makes a concurrent DELETE of the
  batch wait for this transaction, and an insert waits for a deleting one and then fails.
- UPDATE of products.batch_id: checked per changed row (the app never moves a product).
- DELETE / TRUNCATE of batches: removes their products (ON DELETE CASCADE before).
- UPDATE of batches.id: refused (the old foreign key had ON UPDATE NO ACTION).

The app runs every transaction READ COMMITTED: the cascade's DELETE takes a fresh snapshot,
so it also removes products a just-committed insert added to the batch it waited for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 01:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "products_batch_id_fkey"

MISSING_BATCH = f"""
    RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"',
                    'products', '{CONSTRAINT}'
        USING ERRCODE = 'foreign_key_violation',
              CONSTRAINT = '{CONSTRAINT}',
              TABLE = 'products',
              COLUMN = 'batch_id',
              DETAIL = format('Key (batch_id)=(%s) is not present in table "batches".', missing);
"""

FUNCTIONS = (
    f"""
CREATE FUNCTION products_check_batches() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing integer;
BEGIN
    WITH wanted AS (SELECT DISTINCT batch_id FROM new_rows),
         present AS MATERIALIZED (
             SELECT id FROM batches WHERE id IN (SELECT batch_id FROM wanted) FOR KEY SHARE
         )
    SELECT w.batch_id INTO missing
      FROM wanted w
     WHERE NOT EXISTS (SELECT FROM present p WHERE p.id = w.batch_id)
     LIMIT 1;
    IF FOUND THEN
        {MISSING_BATCH}
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION products_check_moved_batch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing integer := NEW.batch_id;
BEGIN
    PERFORM FROM batches WHERE id = NEW.batch_id FOR KEY SHARE;
    IF NOT FOUND THEN
        {MISSING_BATCH}
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE FUNCTION batches_delete_products() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Not TRUNCATE: a `TRUNCATE batches, products` is still using products here.
        DELETE FROM products;
    ELSE
        DELETE FROM products WHERE batch_id IN (SELECT id FROM old_rows);
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION batches_refuse_id_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'update on table "%" violates foreign key constraint "%" on table "%"',
                    'batches', '{CONSTRAINT}', 'products'
        USING ERRCODE = 'foreign_key_violation',
              CONSTRAINT = '{CONSTRAINT}',
              TABLE = 'batches',
              COLUMN = 'id',
              DETAIL = format('Key (id)=(%s) may be referenced from table "products".', OLD.id);
END
$$
""",
)

TRIGGERS = {
    "products_batch_insert": (
        "AFTER INSERT ON products REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION products_check_batches()"
    ),
    "products_batch_move": (
        "AFTER UPDATE OF batch_id ON products FOR EACH ROW "
        "WHEN (OLD.batch_id IS DISTINCT FROM NEW.batch_id) "
        "EXECUTE FUNCTION products_check_moved_batch()"
    ),
    "batches_products_delete": (
        "AFTER DELETE ON batches REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION batches_delete_products()"
    ),
    "batches_products_truncate": (
        "AFTER TRUNCATE ON batches FOR EACH STATEMENT EXECUTE FUNCTION batches_delete_products()"
    ),
    "batches_id_change": (
        "BEFORE UPDATE OF id ON batches FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
        "EXECUTE FUNCTION batches_refuse_id_change()"
    ),
}


def upgrade() -> None:
    op.drop_constraint(CONSTRAINT, "products", type_="foreignkey")
    for function in FUNCTIONS:
        op.execute(function)
    for name, definition in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {definition}")


def downgrade() -> None:
    for name in TRIGGERS:
        table = name.split("_", 1)[0]
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for function in (
        "products_check_batches",
        "products_check_moved_batch",
        "batches_delete_products",
        "batches_refuse_id_change",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.create_foreign_key(
        CONSTRAINT, "products", "batches", ["batch_id"], ["id"], ondelete="CASCADE"
    )
