"""forget sequence: order forgetting and reading by a counter, not by wall clocks

Whether a model learned a sample (and so whether its raw data may be erased) was decided by
comparing the time a job began with the time the sample's tombstone was written: two
transactions' clocks, possibly of two hosts. A job claimed in the instant between a
publish's timestamp and its commit read the sample as active, yet counted as having begun
after it was forgotten. Now each dataset counts the publishes that forgot samples
(``datasets.forget_seq``, incremented under the row's lock, so commits are in its order);
a tombstone carries the count of its publish, a job the count it saw when first claimed,
and a version its job's (an upload's: the count when it was stored). A job saw a sample
active exactly when its count is below the sample's first tombstone's.

Existing rows are numbered from their timestamps, which is what they were judged by: a
dataset's distinct tombstone times in order, each job the number of them at or before it
began, and each version its job's start's (a version without a job: its creation's).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The distinct publish times of a dataset's tombstones at or before a time (:at).
_PUBLISHES_UP_TO = """
    SELECT COUNT(DISTINCT t.created_at) FROM tombstones t
    JOIN models m ON m.id = t.model_id
    WHERE m.dataset_id = {dataset} AND t.created_at <= {at}
"""


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 adds and drops a column without a constraint in
    # place): a batch copy would drop and recreate tables other rows point at.
    op.add_column(
        "datasets", sa.Column("forget_seq", sa.Integer(), nullable=False, server_default="0")
    )
    for table in ("tombstones", "jobs", "model_versions"):
        op.add_column(table, sa.Column("forget_seq", sa.Integer(), nullable=True))
    own_dataset = "(SELECT dataset_id FROM models WHERE models.id = {table}.model_id)"
    # A version was judged by its job's start (a version of no job, by its creation).
    version_at = (
        "COALESCE((SELECT started_at FROM jobs WHERE jobs.id = model_versions.job_id), "
        "model_versions.created_at)"
    )
    for table, at in (
        ("tombstones", "tombstones.created_at"),
        ("jobs", "jobs.started_at"),
        ("model_versions", version_at),
    ):
        count = _PUBLISHES_UP_TO.format(dataset=own_dataset.format(table=table), at=at)
        op.execute(f"UPDATE {table} SET forget_seq = ({count}) WHERE {at} IS NOT NULL")
    op.execute(
        "UPDATE datasets SET forget_seq = (SELECT COUNT(DISTINCT t.created_at) FROM tombstones t"
        " JOIN models m ON m.id = t.model_id WHERE m.dataset_id = datasets.id)"
    )


def downgrade() -> None:
    for table in ("model_versions", "jobs", "tombstones", "datasets"):
        op.drop_column(table, "forget_seq")
