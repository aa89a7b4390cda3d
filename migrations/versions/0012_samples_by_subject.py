"""samples found by subject

A deletion request may name a subject alone: its samples are found by the dataset and the
subject's keyed digest.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_samples_dataset_subject", "samples", ["dataset_id", "subject_digest"])


def downgrade() -> None:
    op.drop_index("ix_samples_dataset_subject", table_name="samples")
