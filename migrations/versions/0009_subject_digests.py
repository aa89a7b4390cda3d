"""subjects kept as the tenant's HMAC digest

Each tenant gets a random subject key; every request's ``subject_id`` is replaced by
HMAC-SHA256 of it under that key (``subject_digest``), and the clear column is dropped.
The audit log's earlier entries keep the unsalted ``subject_sha256`` they were chained
with (rewriting them would break the chain); new entries carry the keyed digest.

The downgrade cannot bring the ids back: the restored column holds the digests.

Revision ID: 0009
Revises: 0008
"""

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Columns are added and dropped in place (SQLite >= 3.35 drops one), not by batch
    # copies: copying ``tenants`` or ``deletion_requests`` would trip the foreign keys that
    # point at them and lose the expression index on tenant names. SQLite cannot add NOT
    # NULL afterwards; there the ORM's default and the service keep both columns filled.
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.add_column("tenants", sa.Column("subject_key", sa.String(length=64), nullable=True))
    keys: dict[str, str] = {}
    for (tenant_id,) in bind.execute(sa.text("SELECT id FROM tenants")).all():
        keys[tenant_id] = secrets.token_hex(32)
        bind.execute(
            sa.text("UPDATE tenants SET subject_key = :key WHERE id = :id"),
            {"key": keys[tenant_id], "id": tenant_id},
        )

    op.add_column(
        "deletion_requests", sa.Column("subject_digest", sa.String(length=64), nullable=True)
    )
    rows = bind.execute(sa.text("SELECT id, tenant_id, subject_id FROM deletion_requests"))
    for request_id, tenant_id, subject_id in rows.all():
        digest = hmac.new(
            bytes.fromhex(keys[tenant_id]), subject_id.strip().encode(), hashlib.sha256
        ).hexdigest()
        bind.execute(
            sa.text("UPDATE deletion_requests SET subject_digest = :digest WHERE id = :id"),
            {"digest": digest, "id": request_id},
        )
    # Idempotency answers stored before held the id in clear: they carry the digest now.
    _replace_in_stored_answers(bind)
    op.drop_index("ix_deletion_requests_subject_id", table_name="deletion_requests")
    op.drop_column("deletion_requests", "subject_id")
    op.create_index("ix_deletion_requests_subject_digest", "deletion_requests", ["subject_digest"])
    if postgres:
        op.alter_column("tenants", "subject_key", nullable=False)
        op.alter_column("deletion_requests", "subject_digest", nullable=False)


def _replace_in_stored_answers(bind: sa.engine.Connection) -> None:
    rows = bind.execute(
        sa.text(
            "SELECT k.tenant_id, k.key, k.response, r.subject_digest FROM idempotency_keys k "
            "JOIN deletion_requests r ON r.id = k.request_id"
        )
    ).all()
    for tenant_id, key, response, digest in rows:
        answer = json.loads(response) if isinstance(response, str) else dict(response)
        answer.pop("subject_id", None)
        answer["subject_digest"] = digest
        bind.execute(
            sa.text(
                "UPDATE idempotency_keys SET response = :response "
                "WHERE tenant_id = :tenant_id AND key = :key"
            ).bindparams(sa.bindparam("response", type_=_JSON)),
            {"response": answer, "tenant_id": tenant_id, "key": key},
        )


def downgrade() -> None:
    # The ids cannot come back: the restored column holds the digests.
    op.add_column(
        "deletion_requests", sa.Column("subject_id", sa.String(length=200), nullable=True)
    )
    op.execute("UPDATE deletion_requests SET subject_id = subject_digest")
    op.drop_index("ix_deletion_requests_subject_digest", table_name="deletion_requests")
    op.drop_column("deletion_requests", "subject_digest")
    op.create_index("ix_deletion_requests_subject_id", "deletion_requests", ["subject_id"])
    op.drop_column("tenants", "subject_key")
