"""audit log signatures

Each entry's hash is signed with an Ed25519 key the database does not hold
(service.audit_signing); entries written before a key was configured have none.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as audit_log:
        audit_log.add_column(sa.Column("signature", sa.String(100), nullable=True))
        audit_log.add_column(sa.Column("key_id", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as audit_log:
        audit_log.drop_column("key_id")
        audit_log.drop_column("signature")
