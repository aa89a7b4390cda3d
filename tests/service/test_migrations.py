"""Migrations that can refuse (what they say when the data stands in their way), and those
that fill new columns from old ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Connection, create_engine, text

from service.migrate import alembic_config
from tests.conftest import PG_ADMIN_URL
from tests.helpers.network import port_open, service_missing


def test_tenant_names_differing_by_case_stop_the_upgrade_and_are_named(sqlite_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0007")
    engine = create_engine(url)
    with engine.begin() as connection:
        for i, name in enumerate(["Acme", "acme", "globex"]):
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES (:id, :name, :at)"),
                {"id": f"t{i}", "name": name, "at": "2026-01-01 00:00:00"},
            )
    with pytest.raises(RuntimeError, match="differ only by case: acme;"):
        command.upgrade(alembic_config(url), "head")
    with engine.begin() as connection:
        connection.execute(text("UPDATE tenants SET name = 'acme-eu' WHERE id = 't0'"))
    command.upgrade(alembic_config(url), "head")
    with engine.begin() as connection, pytest.raises(Exception, match="UNIQUE"):
        connection.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t9', 'GLOBEX', '2026')")
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, sqlite_env, tmp_path) -> Iterator[str]:
    """A new, empty database of each backend (Postgres: a scratch one, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    if not port_open("127.0.0.1", 5432):
        service_missing("Postgres at 127.0.0.1:5432")
    name = f"unlearnd_migration_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _insert_tenant(db: Connection, at: str = "'2026-01-01'") -> None:
    """Tenant 't' (subject key 'k'), which the raw rows below belong to; ``at`` is its
    ``created_at`` as an SQL literal."""
    db.execute(
        text(
            f"INSERT INTO tenants (id, name, created_at, subject_key) VALUES ('t', 't', {at}, 'k')"
        )
    )


def test_the_forget_sequence_is_numbered_from_the_timestamps_it_replaces(empty_database):
    # Migration 0014: a dataset's tombstones are numbered by their distinct publish times;
    # a job gets the number of publishes at or before it began, a version its job's.
    url = empty_database
    command.upgrade(alembic_config(url), "0013")
    engine = create_engine(url)
    json = "'{}'"
    with engine.begin() as db:
        _insert_tenant(db)
        db.execute(
            text(
                "INSERT INTO datasets (id, tenant_id, name, source, holdout_fraction, seed, "
                "num_classes, input_shape, counts, created_at) VALUES ('d', 't', 'd', "
                f"{json}, 0.1, 0, 2, '[1]', {json}, '2026-01-01 00:00:00')"
            )
        )
        db.execute(
            text(
                "INSERT INTO models (id, tenant_id, dataset_id, name, architecture, unlearner, "
                "batching, training, audit_policy, status, created_at, updated_at) VALUES "
                f"('m', 't', 'd', 'm', {json}, {json}, {json}, {json}, {json}, 'ready', "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        db.execute(
            text(
                "INSERT INTO deletion_requests (id, tenant_id, model_id, subject_digest, "
                "already_forgotten, sample_count, status, created_at, updated_at, due_at) "
                "VALUES ('r', 't', 'm', 'x', '[]', 4, 'completed', '2026-01-02', '2026-01-02', "
                "'2026-02-01')"
            )
        )
        for number, at in ((1, "01:00"), (2, "02:00"), (3, "02:00"), (4, "03:00")):
            db.execute(
                text(
                    "INSERT INTO samples (id, dataset_id, key, position, split, label, state) "
                    f"VALUES ({number}, 'd', 'k{number}', {number}, 'train', 0, 'forgotten')"
                )
            )
            db.execute(
                text(
                    "INSERT INTO tombstones (model_id, sample_id, request_id, version_number, "
                    f"created_at) VALUES ('m', {number}, 'r', 2, '2026-01-02 {at}:00')"
                )
            )
        for job, started in (
            ("before", "'2026-01-02 00:30:00'"),
            ("between", "'2026-01-02 02:30:00'"),
            ("queued", "NULL"),
        ):
            db.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, model_id, kind, status, params, request_ids,"
                    " sample_count, attempts, progress, timings, report, created_at, started_at) "
                    f"VALUES ('{job}', 't', 'm', 'train', 'succeeded', {json}, '[]', 0, 1, "
                    f"{json}, {json}, {json}, '2026-01-01 00:00:00', {started})"
                )
            )
        # Trained by the job that began before any publish, stored after two of them: it
        # learned every sample, so its number is its job's (0), not its creation's (2).
        # An uploaded one (no job) is numbered by its creation.
        for version, job, created in (("v1", "'before'", "02:30"), ("v2", "NULL", "02:30")):
            db.execute(
                text(
                    "INSERT INTO model_versions (id, model_id, number, kind, in_lineage, "
                    "deletion_request_ids, forgotten_samples, forgotten_total, artifact_sha256, "
                    f"metrics, unchanged, created_at, job_id) VALUES ('{version}', 'm', "
                    f"{version[1]}, 'trained', true, '[]', 0, 0, 'x', {json}, false, "
                    f"'2026-01-02 {created}:00', {job})"
                )
            )
    command.upgrade(alembic_config(url), "0014")
    with engine.begin() as db:
        versions = dict(db.execute(text("SELECT id, forget_seq FROM model_versions")).all())
        assert versions == {"v1": 0, "v2": 2}
        tombstones = db.execute(text("SELECT forget_seq FROM tombstones ORDER BY sample_id"))
        assert [row[0] for row in tombstones] == [1, 2, 2, 3]
        jobs = dict(db.execute(text("SELECT id, forget_seq FROM jobs")).all())
        assert jobs == {"before": 0, "between": 2, "queued": None}
        assert db.execute(text("SELECT forget_seq FROM datasets")).scalar_one() == 3
    command.downgrade(alembic_config(url), "0013")
    engine.dispose()


def test_registration_jobs_keep_every_row_that_points_at_the_tables_they_copy(empty_database):
    # Migration 0015 recreates `datasets` and `jobs` on SQLite (a batch copy: DROP TABLE);
    # with foreign keys on, that DROP would cascade into job events and versions.
    url = empty_database
    command.upgrade(alembic_config(url), "0014")
    engine = create_engine(url)
    json = "'{}'"
    at = "'2026-01-01 00:00:00'"
    with engine.begin() as db:
        if engine.dialect.name == "sqlite":
            db.exec_driver_sql("PRAGMA foreign_keys=ON")  # as the service's connections
        _insert_tenant(db, at)
        db.execute(
            text(
                "INSERT INTO datasets (id, tenant_id, name, source, holdout_fraction, seed, "
                "num_classes, input_shape, counts, created_at) VALUES ('d', 't', 'd', "
                f"{json}, 0.1, 0, 2, '[1]', {json}, {at})"
            )
        )
        db.execute(
            text(
                "INSERT INTO samples (id, dataset_id, key, position, split, label, state) "
                "VALUES (1, 'd', 'k1', 0, 'train', 0, 'active')"
            )
        )
        db.execute(
            text(
                "INSERT INTO models (id, tenant_id, dataset_id, name, architecture, unlearner, "
                "batching, training, audit_policy, status, created_at, updated_at) VALUES "
                f"('m', 't', 'd', 'm', {json}, {json}, {json}, {json}, {json}, 'ready', "
                f"{at}, {at})"
            )
        )
        db.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, model_id, kind, status, params, request_ids,"
                " sample_count, attempts, progress, timings, report, created_at) "
                f"VALUES ('j', 't', 'm', 'train', 'succeeded', {json}, '[]', 0, 1, "
                f"{json}, {json}, {json}, {at})"
            )
        )
        for n, status in enumerate(("queued", "running", "succeeded"), start=1):
            db.execute(
                text(
                    "INSERT INTO job_events (id, job_id, status, at) "
                    f"VALUES ({n}, 'j', '{status}', {at})"
                )
            )
        db.execute(
            text(
                "INSERT INTO model_versions (id, model_id, number, kind, in_lineage, job_id, "
                "deletion_request_ids, forgotten_samples, forgotten_total, artifact_sha256, "
                f"metrics, created_at) VALUES ('v', 'm', 1, 'trained', TRUE, 'j', '[]', 0, 0, "
                f"'sha', {json}, {at})"
            )
        )

    def rows() -> dict[str, list[tuple]]:
        with engine.connect() as db:
            return {
                table: [tuple(row) for row in db.execute(text(f"SELECT {columns} FROM {table}"))]
                for table, columns in (
                    ("datasets", "id, num_classes"),
                    ("samples", "id, dataset_id"),
                    ("models", "id, dataset_id"),
                    ("jobs", "id, model_id"),
                    ("job_events", "id, job_id, status"),
                    ("model_versions", "id, job_id"),
                )
            }

    before = rows()
    assert all(before.values())
    command.upgrade(alembic_config(url), "0015")
    assert rows() == before
    with engine.begin() as db:
        assert db.execute(text("SELECT status FROM datasets")).scalar_one() == "ready"
        # A register job (no model) and a dataset that never became ready: what 0015 allows.
        db.execute(
            text(
                "INSERT INTO datasets (id, tenant_id, name, source, holdout_fraction, seed, "
                f"status, created_at) VALUES ('d2', 't', 'd2', {json}, 0.1, 0, 'registering', "
                f"{at})"
            )
        )
        db.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, dataset_id, kind, status, params, request_ids,"
                " sample_count, attempts, progress, timings, report, created_at) "
                f"VALUES ('r', 't', 'd2', 'register', 'queued', {json}, '[]', 0, 0, "
                f"{json}, {json}, {json}, {at})"
            )
        )
        db.execute(
            text(f"INSERT INTO job_events (id, job_id, status, at) VALUES (9, 'r', 'queued', {at})")
        )
    command.downgrade(alembic_config(url), "0014")
    assert rows() == before  # what 0014 cannot hold is gone; nothing else
    command.upgrade(alembic_config(url), "head")
    if engine.dialect.name == "sqlite":
        with engine.connect() as db:
            index = db.execute(
                text(
                    "SELECT sql FROM sqlite_master WHERE name = "
                    "'uq_jobs_one_live_lineage_job_per_model'"
                )
            ).scalar_one()
        assert "WHERE status IN" in index  # still partial after the copy
    engine.dispose()


def test_a_downgrade_past_webhooks_removes_their_deliveries_attempts_too(sqlite_env, tmp_path):
    # SQLite migrates with foreign keys off: 0011's downgrade deletes the deliveries that
    # belong to no request (webhook events) and must delete their attempts itself, or the
    # foreign-key check after the migrations refuses the downgrade.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.begin() as db:
        _insert_tenant(db)
        db.execute(
            text(
                "INSERT INTO callback_deliveries (id, tenant_id, event, url, payload, status, "
                "attempts, next_attempt_at, created_at) VALUES ('d', 't', 'audit.completed', "
                "'https://example.com', '{}', 'pending', 1, '2026-01-01', '2026-01-01')"
            )
        )
        db.execute(
            text(
                "INSERT INTO callback_attempts (delivery_id, number, at, seconds) "
                "VALUES ('d', 1, '2026-01-01', 0.1)"
            )
        )
    command.downgrade(alembic_config(url), "0010")
    with engine.begin() as db:
        assert db.execute(text("SELECT COUNT(*) FROM callback_attempts")).scalar_one() == 0
        assert db.execute(text("SELECT COUNT(*) FROM callback_deliveries")).scalar_one() == 0
    engine.dispose()
