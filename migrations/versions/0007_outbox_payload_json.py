"""outbox payloads stored as json text, compressed with lz4 where the server has it

An event row now holds a whole group (a feed of 1,000 batches: ~500 kB of JSON, see
app.outbox.emit_events). As jsonb, writing it costs ~6.5 ms (parsing and pglz compression)
inside the feed's transaction; as json compressed with lz4, ~1.8 ms. The relay and the
fan-out read it once, so jsonb's faster reads buy nothing here.

A server built without lz4 keeps its default compression (the ALTER is skipped).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 13:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LZ4_WHEN_AVAILABLE = """
DO $$
BEGIN
    ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: outbox payloads keep the default compression';
END
$$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json")
    op.execute(LZ4_WHEN_AVAILABLE)


def downgrade() -> None:
    op.execute("ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION default")
    op.execute("ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb")
