"""job reports and seeds, unchanged versions

Every job keeps the method's report (steps, stop rule, checks...) and the seed of its
random draws; a version whose weights equal its parent's says so, with the reason.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("report", JSON, nullable=False, server_default="{}"))
        jobs.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("model_versions") as versions:
        versions.add_column(
            sa.Column("unchanged", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        versions.add_column(sa.Column("unchanged_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as versions:
        versions.drop_column("unchanged_reason")
        versions.drop_column("unchanged")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("seed")
        jobs.drop_column("report")
