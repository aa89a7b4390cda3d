"""per-sample fingerprints and subject digests

A sample records what identified its content when it was registered (a manifest row's
digest, its file's size and modification time), so a job that reads it can tell it
changed; and, for a manifest with a `subject` column, a nullable digest of the subject
(never the subject itself). Samples registered before stay null: nothing is checked.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as samples:
        samples.add_column(sa.Column("fingerprint", sa.String(128), nullable=True))
        samples.add_column(sa.Column("subject_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples") as samples:
        samples.drop_column("subject_digest")
        samples.drop_column("fingerprint")
