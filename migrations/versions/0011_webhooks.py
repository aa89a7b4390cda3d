"""webhook subscriptions; deliveries of any event; Standard Webhooks secrets

Deliveries gain `event`, `subscription_id` and `redelivery_of`, and `request_id` becomes
optional (a subscription's event need not be a request's). Callback secrets take the
Standard Webhooks form `whsec_<base64 of the key bytes>`. A secret made before this
revision (`whsec_` + URL-safe text, keyed as that raw text) becomes `whsec_` + base64 of
that same text, so the HMAC key bytes do not change: no secret is replaced, it is only
written the way `standardwebhooks.Webhook(secret)` reads it. Receivers still switch to
the new headers (and read the secret again in its new form).

Revision ID: 0011
Revises: 0010
"""

import base64
import binascii
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_CHANGED = "deletion_request.status_changed"
SECRET_COLUMNS = ("callback_secret", "previous_callback_secret")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _standard(secret: str) -> str:
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def _legacy(secret: str) -> str | None:
    """The old form of a converted secret; None (a new one is made on first use) for a
    secret made after the upgrade, whose random bytes have no text form."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _convert_secrets(convert) -> None:  # type: ignore[no-untyped-def]
    bind = op.get_bind()
    tenants = sa.table("tenants", sa.column("id"), *(sa.column(c) for c in SECRET_COLUMNS))
    for row in bind.execute(sa.select(tenants)).mappings().all():
        values = {c: convert(row[c]) for c in SECRET_COLUMNS if row[c]}
        if values:
            bind.execute(tenants.update().where(tenants.c.id == row["id"]).values(**values))


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("previous_secret", sa.String(length=100), nullable=True),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_subscriptions_tenant_id"), ["tenant_id"])
    with op.batch_alter_table("callback_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("event", sa.String(length=64), nullable=False, server_default=STATUS_CHANGED)
        )
        batch_op.add_column(sa.Column("subscription_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("redelivery_of", sa.String(length=36), nullable=True))
        batch_op.alter_column("request_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.create_foreign_key(
            "fk_callback_deliveries_subscription_id",
            "webhook_subscriptions",
            ["subscription_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            batch_op.f("ix_callback_deliveries_subscription_id"), ["subscription_id"]
        )
    with op.batch_alter_table("callback_deliveries", schema=None) as batch_op:
        batch_op.alter_column("event", existing_type=sa.String(length=64), server_default=None)
    _convert_secrets(_standard)


def downgrade() -> None:
    _convert_secrets(_legacy)
    # Their attempts first: SQLite runs migrations with foreign keys off (migrations/env.py),
    # so no cascade removes them.
    op.execute(
        sa.text(
            "DELETE FROM callback_attempts WHERE delivery_id IN "
            "(SELECT id FROM callback_deliveries WHERE request_id IS NULL)"
        )
    )
    op.execute(sa.text("DELETE FROM callback_deliveries WHERE request_id IS NULL"))
    with op.batch_alter_table("callback_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_deliveries_subscription_id"))
        batch_op.drop_constraint("fk_callback_deliveries_subscription_id", type_="foreignkey")
        batch_op.alter_column("request_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.drop_column("redelivery_of")
        batch_op.drop_column("subscription_id")
        batch_op.drop_column("event")
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_subscriptions_tenant_id"))
    op.drop_table("webhook_subscriptions")
