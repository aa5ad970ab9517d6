"""work_centers.created_at and updated_at (clients read them on GET /work-centers)

Existing work centers get the migration's time: when they were really created is not known.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ("created_at", "updated_at"):
        op.add_column(
            "work_centers",
            sa.Column(
                column, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
            ),
        )


def downgrade() -> None:
    op.drop_column("work_centers", "updated_at")
    op.drop_column("work_centers", "created_at")
