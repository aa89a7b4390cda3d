"""dataset generations: datasets that grow, and the training set each version saw

A dataset's samples come in generations: registration is generation 1, each refresh that
finds new keys in the source adds the next. A model version records the generation it was
trained on (or, uploaded, declares), so a retrain or a retrained reference of it uses that
set minus what was forgotten. Existing rows are generation 1. Tombstones get an index by
request: a request's read says from its tombstones whether its samples may be erased from
the source.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("datasets", "samples", "model_versions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("generation", sa.Integer(), nullable=False, server_default="1")
            )
    with op.batch_alter_table("tombstones") as tombstones:
        tombstones.create_index("ix_tombstones_request_id", ["request_id"])


def downgrade() -> None:
    with op.batch_alter_table("tombstones") as tombstones:
        tombstones.drop_index("ix_tombstones_request_id")
    for table in ("model_versions", "samples", "datasets"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("generation")
