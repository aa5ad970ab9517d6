"""cache invalidation: statement-level triggers NOTIFY the api processes' read caches

Every statement that changes a cached table sends one NOTIFY on `cache_invalidation`
with the table name and the keys it touched (`products:7,9` = products of batches 7 and
9; a bare `products` = too many keys, or TRUNCATE: the whole table). NOTIFY is delivered
at commit, so a rolled-back write invalidates nothing, and every writer is covered: api
replicas, workers, imports, migrations, an operator's psql.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> the column whose values name what changed (the cache tags entries by batch id).
CACHED_TABLES = {
    "batches": "id",
    "products": "batch_id",
    "work_centers": "id",
    "statistics_snapshots": "name",
}
# Above this many distinct keys one statement invalidates the whole table (payload < 8000 B).
MAX_KEYS = 100

NOTIFY_FUNCTION = f"""
CREATE FUNCTION notify_cache_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed_rows text;
    changed bigint;
    keys text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('cache_invalidation', TG_TABLE_NAME);
        RETURN NULL;
    END IF;
    -- Transition tables hold the rows this statement changed; dynamic SQL because each
    -- trigger (one per event) sees only the transition tables it declares.
    changed_rows := CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %1$I FROM new_rows', TG_ARGV[0])
        WHEN 'DELETE' THEN format('SELECT %1$I FROM old_rows', TG_ARGV[0])
        ELSE format('SELECT %1$I FROM new_rows UNION SELECT %1$I FROM old_rows', TG_ARGV[0])
    END;
    EXECUTE format(
        'SELECT count(*), string_agg(k::text, '','') '
        'FROM (SELECT DISTINCT k FROM (%s) AS changed(k) LIMIT {MAX_KEYS + 1}) AS d',
        changed_rows
    ) INTO changed, keys;
    IF changed = 0 THEN
        RETURN NULL;  -- e.g. an upsert that changed nothing
    END IF;
    PERFORM pg_notify(
        'cache_invalidation',
        CASE WHEN changed > {MAX_KEYS} THEN TG_TABLE_NAME ELSE TG_TABLE_NAME || ':' || keys END
    );
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    for table, key in CACHED_TABLES.items():
        # Transition tables allow one event per trigger, hence three plus TRUNCATE.
        op.execute(
            f"CREATE TRIGGER {table}_cache_insert AFTER INSERT ON {table} "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION notify_cache_invalidation('{key}')"
        )
        op.execute(
            f"CREATE TRIGGER {table}_cache_update AFTER UPDATE ON {table} "
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION notify_cache_invalidation('{key}')"
        )
        op.execute(
            f"CREATE TRIGGER {table}_cache_delete AFTER DELETE ON {table} "
            "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION notify_cache_invalidation('{key}')"
        )
        op.execute(
            f"CREATE TRIGGER {table}_cache_truncate AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION notify_cache_invalidation('{key}')"
        )


def downgrade() -> None:
    for table in CACHED_TABLES:
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_cache_{event} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS notify_cache_invalidation()")
