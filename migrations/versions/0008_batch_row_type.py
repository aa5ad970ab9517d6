"""batch_row: the composite type a 1C feed's rows are sent in

The feed used to go in as twelve parallel arrays. asyncpg checks every element of an array
for nested arrays (two isinstance checks against collections.abc per text element): ~3 ms
of the api's CPU for 1,000 batches. As one array of records it checks each row once.
The attributes are the columns app.batches.service inserts, in its order; a change to them
is a new migration.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TYPE batch_row AS (
            is_closed boolean,
            closed_at timestamptz,
            task_description text,
            work_center_id integer,
            shift varchar,
            team varchar,
            batch_number integer,
            batch_date date,
            nomenclature text,
            ekn_code varchar,
            shift_start timestamptz,
            shift_end timestamptz
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TYPE batch_row")
