"""SQLAlchemy table models. API schemas live apart, in each resource's ``schemas`` module."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.enums import LINEAGE_JOB_KINDS, LIVE_JOB_STATUSES


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")

_live = ", ".join(f"'{s.value}'" for s in LIVE_JOB_STATUSES)
_lineage = ", ".join(f"'{k.value}'" for k in LINEAGE_JOB_KINDS)
ONE_LIVE_LINEAGE_JOB = f"status IN ({_live}) AND kind IN ({_lineage})"


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    # A name is one tenant whatever its case (migration 0008).
    __table_args__ = (Index("ux_tenants_name_lower", func.lower(text("name")), unique=True),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Signs callback bodies (kept in clear: a signature needs it). After a rotation the
    # previous one also signs until previous_callback_secret_until.
    callback_secret: Mapped[str | None] = mapped_column(String(100))
    previous_callback_secret: Mapped[str | None] = mapped_column(String(100))
    previous_callback_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Keys the HMAC of subject ids (service.subjects); made with the tenant, never shown.
    subject_key: Mapped[str] = mapped_column(String(64), default=lambda: secrets.token_hex(32))


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replaced_by: Mapped[str | None] = mapped_column(String(36))  # set by a rotation


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[dict[str, Any]] = mapped_column(Json)
    holdout_fraction: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    # Known once the source is indexed: NULL while ``registering`` and for a ``failed`` one
    # (migration 0015). NULL, not a placeholder: 0 classes or an empty shape would read as a
    # real dataset to the code and SQL that use them (a class check against 0 classes);
    # a NULL is caught by the type checker and fails loudly in SQL arithmetic.
    num_classes: Mapped[int | None] = mapped_column(Integer)
    input_shape: Mapped[list[int] | None] = mapped_column(Json)
    counts: Mapped[dict[str, int] | None] = mapped_column(Json)
    # ``registering`` (a register job indexes the source), ``ready`` or ``failed`` (error).
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    error: Mapped[str | None] = mapped_column(Text)
    # Registration is generation 1; each refresh that adds samples the next (docs/datasets.md).
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # How many publishes have forgotten samples of it: the order of forgetting and reading
    # (``service.datasets.erasure``), incremented under this row's lock (migration 0014).
    forget_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sample(Base):
    """One row per sample: its stable key, where it sits in the source, and its state.

    ``state`` is dataset-wide: once any request forgets a sample it is never trained on
    again by any model (docs/architecture.md, rule 7); which models forgot it is in ``tombstones``.
    """

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "key"),
        Index("ix_samples_dataset_split_state", "dataset_id", "split", "state"),
        # A request by subject finds its samples by this (migration 0012).
        Index("ix_samples_dataset_subject", "dataset_id", "subject_digest"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    label: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="active")
    # What identified the sample's content at registration (``ml.sources.SourceIndex``);
    # a job that reads it checks it. Null for shipped data and older registrations.
    fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # HMAC of the manifest's `subject` under the tenant's subject key (service.subjects),
    # written at registration; null where the source names none (never stored as given).
    subject_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The dataset generation that added it: a version knows it only from that generation on.
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[dict[str, Any]] = mapped_column(Json)
    unlearner: Mapped[dict[str, Any]] = mapped_column(Json)
    batching: Mapped[dict[str, Any]] = mapped_column(Json)
    training: Mapped[dict[str, Any]] = mapped_column(Json)
    audit_policy: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    head_version: Mapped[int | None] = mapped_column(Integer)
    flush_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    parent: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    in_lineage: Mapped[bool] = mapped_column(default=True)
    unlearner: Mapped[dict[str, Any] | None] = mapped_column(Json)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), unique=True)
    deletion_request_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    forgotten_samples: Mapped[int] = mapped_column(Integer, default=0)
    forgotten_total: Mapped[int] = mapped_column(Integer, default=0)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # UA / RA / TA
    # The recipe the service trained it with, as run (``ml.training.TrainingConfig``); None
    # for uploaded weights, methods with their own loop, and versions older than this column.
    training: Mapped[dict[str, Any] | None] = mapped_column(Json)
    seconds: Mapped[float | None] = mapped_column(Float)
    unchanged: Mapped[bool] = mapped_column(default=False)  # the parent's weights, as they were
    unchanged_reason: Mapped[str | None] = mapped_column(Text)
    # The dataset generation it was trained on (or, uploaded, declared): its training set is
    # that generation's samples minus what was forgotten.
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The dataset's forget_seq its job saw when first claimed (an upload's: when stored):
    # it learned the samples first forgotten by a later publish, none of the others.
    forget_seq: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VersionArtifact(Base):
    """Extra files an unlearner keeps per version (PGU's SVD cache), content-addressed."""

    __tablename__ = "version_artifacts"
    __table_args__ = (UniqueConstraint("version_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_one_live_lineage_job_per_model",
            "model_id",
            unique=True,
            postgresql_where=text(ONE_LIVE_LINEAGE_JOB),
            sqlite_where=text(ONE_LIVE_LINEAGE_JOB),
        ),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_model_created", "model_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # A model's job has its model; a ``register`` job has none but its dataset (0015).
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    base_version: Mapped[int | None] = mapped_column(Integer)
    result_version: Mapped[int | None] = mapped_column(Integer)
    unlearner: Mapped[dict[str, Any] | None] = mapped_column(Json)
    params: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    request_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker: Mapped[str | None] = mapped_column(String(200))
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    # What the job did, as its method (or runner) reports it: steps, stop rule, checks...
    report: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    seed: Mapped[int | None] = mapped_column(BigInteger)  # every random draw of the job
    # The dataset's forget_seq when first claimed: what it may have read as active.
    forget_seq: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobEvent(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"
    __table_args__ = (
        Index("ix_requests_model_status_created", "model_id", "status", "created_at"),
        Index("ix_requests_tenant_created", "tenant_id", "created_at"),
        Index("ix_requests_job", "job_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    # The subject as the tenant's HMAC digest, never in clear (service.subjects).
    subject_digest: Mapped[str] = mapped_column(String(64), index=True)
    sample_keys: Mapped[list[str] | None] = mapped_column(Json)
    class_labels: Mapped[list[int] | None] = mapped_column(Json)
    already_forgotten: Mapped[list[str]] = mapped_column(Json, default=list)
    sample_count: Mapped[int] = mapped_column(Integer)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    result_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RequestEvent(Base):
    __tablename__ = "request_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"))
    response: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Tombstone(Base):
    """A sample forgotten by a model: it never again enters that model's training data."""

    __tablename__ = "tombstones"
    __table_args__ = (UniqueConstraint("model_id", "sample_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    # Indexed: a request's read finds its tombstones (``service.datasets.erasure``).
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), index=True)
    version_number: Mapped[int] = mapped_column(Integer)
    forget_seq: Mapped[int | None] = mapped_column(Integer)  # its publish's, per dataset
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeStamp(Base):
    """How many committed transactions changed one tenant's rows of one kind: the validator
    behind every polled read's ETag (``service.changes``)."""

    __tablename__ = "change_stamps"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(16), primary_key=True)
    stamp: Mapped[int] = mapped_column(BigInteger)


class AuditLogEntry(Base):
    """Append-only, hash-chained: ``hash = sha256(prev_hash || canonical entry)``, and signed."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tenant_id: Mapped[str | None] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Ed25519 over (id, hash) with a key the database does not hold (service.audit_signing);
    # None for entries written while no key was configured.
    signature: Mapped[str | None] = mapped_column(String(100))
    key_id: Mapped[str | None] = mapped_column(String(16))


class Audit(Base):
    """One audit report of a model version (the latest per version is the current one)."""

    __tablename__ = "audits"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    verdict: Mapped[str | None] = mapped_column(String(16))
    report: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookSubscription(Base):
    """A tenant's standing order: POST these event types (of one model, or of every model
    when ``model_id`` is null) to ``url``, signed with the subscription's own secret."""

    __tablename__ = "webhook_subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(Json)
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(String(500), default="")
    # Kept in clear (a signature needs it), as the tenant's callback secret.
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CallbackDelivery(Base):
    """One event to POST to one URL, until it is delivered or given up: a request's status
    change to its ``callback_url`` (``request_id``), or any event to a subscription
    (``subscription_id``). Written in the transaction of the event."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (Index("ix_callback_deliveries_due", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    request_id: Mapped[str | None] = mapped_column(
        ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    # The delivery this one sends again (POST .../redeliver): same payload, same webhook-id.
    redelivery_of: Mapped[str | None] = mapped_column(String(36))
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CallbackAttempt(Base):
    __tablename__ = "callback_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("callback_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float)
