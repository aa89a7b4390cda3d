"""Subjects are kept and answered only as the tenant's HMAC digest (service.subjects):
never in clear in the database, the answers, the certificate or the audit log; found by
the id they were asked with; different per tenant; and migration 0009 digests what an
earlier database held in clear."""

from __future__ import annotations

import hashlib
import json

from alembic import command
from sqlalchemy import create_engine, select, text

from service.db import session_scope
from service.jobs import dispatch
from service.migrate import alembic_config
from service.subjects import subject_digest
from service.tables import AuditLogEntry, IdempotencyKey, Tenant
from tests.helpers.app import (
    create_dataset,
    create_model,
    make_key,
    run_queued_jobs,
    train_keys,
)

SUBJECT = "user-8812"


def _tenant_key(name: str) -> str:
    with session_scope() as session:
        return session.scalar(select(Tenant.subject_key).where(Tenant.name == name)) or ""


def _database_text() -> str:
    """Every row of every table the requests touch, as one text."""
    with session_scope() as session:
        rows = [
            repr(tuple(row))
            for table in ("deletion_requests", "idempotency_keys", "audit_log", "request_events")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        ]
    return "\n".join(rows)


def test_a_subject_is_stored_and_answered_only_as_its_keyed_digest(client, admin, ready_model):
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    body = {"model_id": ready_model["id"], "subject_id": SUBJECT, "sample_keys": keys}
    answer = client.post(
        "/v1/deletion-requests", headers={**admin, "Idempotency-Key": "k1"}, json=body
    )
    assert answer.status_code == 202, answer.text
    created = answer.json()
    assert "subject_id" not in created
    expected = subject_digest(_tenant_key("acme"), SUBJECT)
    assert created["subject_digest"] == expected

    replay = client.post(
        "/v1/deletion-requests", headers={**admin, "Idempotency-Key": "k1"}, json=body
    )
    assert replay.json() == created
    fetched = client.get(f"/v1/deletion-requests/{created['id']}", headers=admin).json()
    assert fetched["subject_digest"] == expected and "subject_id" not in fetched

    # Found by the id it was asked with (digested with the same key), and by nothing else.
    found = client.get("/v1/deletion-requests", headers=admin, params={"subject_id": SUBJECT})
    assert [item["id"] for item in found.json()["items"]] == [created["id"]]
    other = client.get("/v1/deletion-requests", headers=admin, params={"subject_id": "user-1"})
    assert other.json()["items"] == []

    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    assert dispatch.dispatch_model(ready_model["id"]) is not None
    run_queued_jobs(ready_model["id"])
    certificate = client.get(
        f"/v1/deletion-requests/{created['id']}/certificate", headers=admin
    ).json()
    assert certificate["request"]["subject_digest"] == expected
    with session_scope() as session:
        received = session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.action == "deletion_request.received")
        ).one()
        stored_answer = session.scalars(select(IdempotencyKey.response)).one()
    assert received.payload["subject_digest"] == expected
    assert stored_answer["subject_digest"] == expected
    everything = _database_text() + json.dumps(certificate)
    assert SUBJECT not in everything
    assert hashlib.sha256(SUBJECT.encode()).hexdigest() not in everything


def test_two_tenants_digest_the_same_subject_differently(client, admin, ready_model):
    other_admin = make_key(["admin"], tenant="globex")
    dataset = create_dataset(client, other_admin)
    model = create_model(client, other_admin, dataset["id"])
    keys = train_keys(client, other_admin, dataset["id"], 1)
    mine = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={
            "model_id": ready_model["id"],
            "subject_id": SUBJECT,
            "sample_keys": train_keys(client, admin, ready_model["dataset_id"], 1),
        },
    ).json()
    theirs = client.post(
        "/v1/deletion-requests",
        headers=other_admin,
        json={"model_id": model["id"], "subject_id": SUBJECT, "sample_keys": keys},
    ).json()
    assert mine["subject_digest"] != theirs["subject_digest"]
    assert _tenant_key("acme") != _tenant_key("globex")


def test_migration_0009_digests_the_subjects_an_earlier_database_held(sqlite_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0008")
    engine = create_engine(url)
    at = "2026-01-01 00:00:00"
    answer = {"id": "r1", "subject_id": SUBJECT, "status": "pending"}
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :at)"),
            {"at": at},
        )
        # (SQLite checks no foreign keys here: the request's model need not exist.)
        connection.execute(
            text(
                "INSERT INTO deletion_requests (id, tenant_id, model_id, subject_id, sample_keys, "
                "class_labels, already_forgotten, sample_count, status, created_at, updated_at, "
                "due_at) VALUES ('r1', 't1', 'm1', :subject, '[\"k\"]', NULL, '[]', 1, "
                "'pending', :at, :at, :at)"
            ),
            {"subject": SUBJECT, "at": at},
        )
        connection.execute(
            text(
                "INSERT INTO idempotency_keys (tenant_id, key, body_sha256, request_id, "
                "response, created_at) VALUES ('t1', 'k', 'x', 'r1', :response, :at)"
            ),
            {"response": json.dumps(answer), "at": at},
        )
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        key = connection.scalar(text("SELECT subject_key FROM tenants"))
        digest = connection.scalar(text("SELECT subject_digest FROM deletion_requests"))
        response = json.loads(connection.scalar(text("SELECT response FROM idempotency_keys")))
        columns = [
            row[1] for row in connection.execute(text("PRAGMA table_info(deletion_requests)"))
        ]
    engine.dispose()
    assert len(bytes.fromhex(key)) == 32
    assert digest == subject_digest(key, SUBJECT)
    assert "subject_id" not in columns
    assert response == {"id": "r1", "subject_digest": digest, "status": "pending"}
