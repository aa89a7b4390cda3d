"""registration jobs: a large dataset is registered by a job, not in one HTTP call

A dataset gets a ``status`` (``registering`` while its register job indexes the source,
``ready``, ``failed`` with an ``error``); what only indexing knows (``num_classes``,
``input_shape``, ``counts``) is NULL until then. A job may belong to a dataset
(``jobs.dataset_id``) instead of a model: ``jobs.model_id`` becomes nullable.

On SQLite the nullability changes recreate ``datasets`` and ``jobs`` (a batch copy);
``migrations/env.py`` turns foreign keys off around every migration so the DROP TABLE of
that copy neither fails nor cascades into the rows that point at them (job events,
versions, samples), and checks the keys before turning them back on.

Revision ID: 0015
Revises: 0014
"""

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The partial unique index of 0001 (one live lineage job per model), dropped and made
# again around the batch copy: a copy rebuilds indexes from reflection, which may lose
# its WHERE clause and make it a plain unique index on model_id.
_ONE_LIVE = "uq_jobs_one_live_lineage_job_per_model"
_ONE_LIVE_WHERE = (
    "status IN ('queued', 'running', 'auditing') AND kind IN ('train', 'unlearn', 'cache')"
)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_KNOWN_AFTER_INDEXING = (("num_classes", sa.Integer()), ("input_shape", _JSON), ("counts", _JSON))


def _one_live_index() -> None:
    op.create_index(
        _ONE_LIVE,
        "jobs",
        ["model_id"],
        unique=True,
        postgresql_where=sa.text(_ONE_LIVE_WHERE),
        sqlite_where=sa.text(_ONE_LIVE_WHERE),
    )


@contextmanager
def _quiet_reflection() -> Iterator[None]:
    """A batch copy reflects the tables the copied one points at: ``tenants``, whose
    expression index (0008) SQLAlchemy cannot reflect, and says so. Nothing of ``tenants``
    is copied; the warning would only alarm whoever runs the migration."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
        yield


def upgrade() -> None:
    with _quiet_reflection():
        _upgrade()


def downgrade() -> None:
    with _quiet_reflection():
        _downgrade()


def _upgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="ready")
        )
        datasets.add_column(sa.Column("error", sa.Text(), nullable=True))
        for name, type_ in _KNOWN_AFTER_INDEXING:
            datasets.alter_column(name, existing_type=type_, nullable=True)
    op.drop_index(_ONE_LIVE, table_name="jobs")
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("dataset_id", sa.String(36), nullable=True))
        jobs.create_foreign_key(
            "fk_jobs_dataset_id_datasets", "datasets", ["dataset_id"], ["id"], ondelete="CASCADE"
        )
        jobs.alter_column("model_id", existing_type=sa.String(36), nullable=True)
    op.create_index("ix_jobs_dataset_id", "jobs", ["dataset_id"])
    _one_live_index()


def _downgrade() -> None:
    # What cannot be expressed before 0015 goes: register jobs (no model) with their
    # events, and datasets that never became ready (they hold no samples, no model uses
    # them). Deleted explicitly: SQLite runs migrations with foreign keys off, no cascade.
    op.execute(
        "DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE model_id IS NULL)"
    )
    op.execute("DELETE FROM jobs WHERE model_id IS NULL")
    op.execute(
        "DELETE FROM samples WHERE dataset_id IN (SELECT id FROM datasets WHERE status <> 'ready')"
    )
    op.execute("DELETE FROM datasets WHERE status <> 'ready'")
    op.drop_index("ix_jobs_dataset_id", table_name="jobs")
    op.drop_index(_ONE_LIVE, table_name="jobs")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("fk_jobs_dataset_id_datasets", type_="foreignkey")
        jobs.drop_column("dataset_id")
        jobs.alter_column("model_id", existing_type=sa.String(36), nullable=False)
    _one_live_index()
    with op.batch_alter_table("datasets") as datasets:
        for name, type_ in _KNOWN_AFTER_INDEXING:
            datasets.alter_column(name, existing_type=type_, nullable=False)
        datasets.drop_column("error")
        datasets.drop_column("status")
