"""tenant names ignore case

`Acme` and `acme` were two tenants; a name is now one tenant whatever its case. The
upgrade fails, naming them, if a database already holds names that differ only by case:
merge or rename those tenants first.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    clashes = op.get_bind().execute(
        sa.text("SELECT lower(name) FROM tenants GROUP BY lower(name) HAVING count(*) > 1")
    )
    names = sorted(row[0] for row in clashes)
    if names:
        raise RuntimeError(
            f"tenant names that differ only by case: {', '.join(names)}; merge or rename "
            "those tenants, then upgrade again"
        )
    op.create_index("ux_tenants_name_lower", "tenants", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("ux_tenants_name_lower", table_name="tenants")
