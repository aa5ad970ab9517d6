"""The migrations build exactly the schema the models describe (`make revision` stays empty)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import support


def test_models_match_the_migrated_schema():
    # A subprocess: the async Alembic env runs its own event loop.
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=support.ROOT,
        env={**os.environ, **support.test_environment()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr


async def test_every_cached_table_has_its_invalidation_triggers():
    """A table a cached answer depends on logs every kind of change to `cache_changes`."""
    from types import SimpleNamespace

    from sqlalchemy import text

    from app.cache import DASHBOARD_TAGS, batch_page_tags
    from app.db import transaction

    batch = SimpleNamespace(id=1, work_center=SimpleNamespace(id=1))
    tables = {table for table, _ in (*DASHBOARD_TAGS, *batch_page_tags([batch]))}
    async with transaction() as session:
        rows = await session.execute(
            text(
                "SELECT t.tgname, pg_get_functiondef(t.tgfoid) FROM pg_trigger t "
                "WHERE NOT t.tgisinternal"
            )
        )
        triggers = {name: definition for name, definition in rows.all()}
    for table in sorted(tables):
        for event in ("insert", "update", "delete", "truncate"):
            name = f"{table}_cache_{event}"
            assert name in triggers, f"{table} has no {event} trigger"
            assert "INSERT INTO cache_changes" in triggers[name], f"{name} does not log"
    # Emptying the log by hand must tell the readers too.
    assert "INSERT INTO cache_changes" in triggers["cache_changes_truncate"]
