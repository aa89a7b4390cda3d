"""the training recipe on each version

A version the service trained (version 1, `retrain`, `finetune` and `random_labels`'s
fine-tuning, retrained audit references) records the recipe it was trained with, as run
on the worker's device. Versions made before stay null: nothing recorded what ran.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as versions:
        versions.add_column(sa.Column("training", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as versions:
        versions.drop_column("training")
