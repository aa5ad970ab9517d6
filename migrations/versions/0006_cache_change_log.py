"""cache invalidation through a change log instead of NOTIFY

The triggers of 0002 sent one NOTIFY per statement. PostgreSQL serialises committing
transactions that NOTIFY (one global lock held across the commit's WAL flush), so every
single-code insert into products waited for the previous one's fsync: ~2,200 inserts/s
with them against ~9,300/s without, measured with pgbench on the same machine.

Now the same statement-level triggers (same names, same events, same keys) append a row to
`cache_changes`: the writing transaction's id (pg_current_xact_id()), the table, and the
keys changed (NULL: too many, or TRUNCATE: the whole table). Inserts of different
transactions do not wait for each other. Each api process reads the log before it serves a
hit (app/cache.py): the rows whose transaction had not committed in its previous snapshot
and has now (xid >= that snapshot's xmax, or in its in-progress list), which is exactly what
committed since, in whatever order the transactions got their ids. A rolled-back write
leaves no row, and every writer is covered as before: api replicas, workers, imports,
migrations, an operator's psql.

The dashboard snapshot records the database snapshot it was computed from
(statistics_snapshots.source_snapshot): whether its sources changed since is then a lookup
in the log, exact, where it used to compare wall-clock times of notifications.

A TRUNCATE of the log itself writes a '*' row (every reader forgets everything); readers
prune rows older than a minute and write a '*' row naming the xid below which rows are
gone (a reader whose snapshot is older forgets everything).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000+00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> the column whose values name what changed (as in 0002).
CACHED_TABLES = {
    "batches": "id",
    "products": "batch_id",
    "work_centers": "id",
    "statistics_snapshots": "name",
}
EVENTS = ("insert", "update", "delete", "truncate")
MAX_KEYS = 100  # above this many distinct keys one row names the whole table


def _log(rows: str) -> str:
    """Append the distinct keys of `rows` (a query of one column k), if any."""
    return f"""
        INSERT INTO cache_changes (xid, table_name, keys)
        SELECT pg_current_xact_id()::text::bigint, TG_TABLE_NAME,
               CASE WHEN count(*) > {MAX_KEYS} THEN NULL ELSE array_agg(k) END
          FROM (SELECT DISTINCT k::text AS k FROM ({rows}) AS changed(k) LIMIT {MAX_KEYS + 1}) AS d
        HAVING count(*) > 0;"""


def _function(table: str, column: str) -> str:
    # One function per table with the column written out: static SQL, planned once per
    # trigger (0002's dynamic SQL was parsed and planned on every statement).
    return f"""
CREATE FUNCTION cache_log_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_log(f"SELECT {column} FROM new_rows")}
    ELSIF TG_OP = 'DELETE' THEN
        {_log(f"SELECT {column} FROM old_rows")}
    ELSIF TG_OP = 'UPDATE' THEN
        {_log(f"SELECT {column} FROM new_rows UNION SELECT {column} FROM old_rows")}
    ELSE
        INSERT INTO cache_changes (xid, table_name, keys)
        VALUES (pg_current_xact_id()::text::bigint, TG_TABLE_NAME, NULL);
    END IF;
    RETURN NULL;
END
$$
"""


LOG_TRUNCATED = """
CREATE FUNCTION cache_changes_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cache_changes (xid, table_name, keys)
    VALUES (pg_current_xact_id()::text::bigint, '*', NULL);
    RETURN NULL;
END
$$
"""


def _triggers(table: str, function: str) -> dict[str, str]:
    # Transition tables allow one event per trigger, hence three plus TRUNCATE.
    return {
        f"{table}_cache_insert": (
            f"AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {function}"
        ),
        f"{table}_cache_update": (
            f"AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}"
        ),
        f"{table}_cache_delete": (
            f"AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {function}"
        ),
        f"{table}_cache_truncate": (
            f"AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}"
        ),
    }


def _drop_triggers() -> None:
    for table in CACHED_TABLES:
        for event in EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_cache_{event} ON {table}")


def upgrade() -> None:
    op.create_table(
        "cache_changes",
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("keys", sa.ARRAY(sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("xid", "id"),
    )
    op.add_column("statistics_snapshots", sa.Column("source_snapshot", sa.Text(), nullable=True))
    _drop_triggers()
    op.execute("DROP FUNCTION IF EXISTS notify_cache_invalidation()")
    for table, column in CACHED_TABLES.items():
        op.execute(_function(table, column))
        for name, definition in _triggers(table, f"cache_log_{table}()").items():
            op.execute(f"CREATE TRIGGER {name} {definition}")
    op.execute(LOG_TRUNCATED)
    op.execute(
        "CREATE TRIGGER cache_changes_truncate AFTER TRUNCATE ON cache_changes "
        "FOR EACH STATEMENT EXECUTE FUNCTION cache_changes_truncated()"
    )


def downgrade() -> None:
    _drop_triggers()
    for table in CACHED_TABLES:
        op.execute(f"DROP FUNCTION IF EXISTS cache_log_{table}()")
    op.drop_table("cache_changes")  # its trigger goes with it
    op.execute("DROP FUNCTION IF EXISTS cache_changes_truncated()")
    op.drop_column("statistics_snapshots", "source_snapshot")
    # Back to 0002's NOTIFY triggers, built by 0002's own code.
    path = Path(__file__).with_name("0002_cache_invalidation_triggers.py")
    spec = importlib.util.spec_from_file_location("migration_0002", path)
    assert spec is not None
    assert spec.loader is not None
    notify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notify)
    notify.upgrade()
