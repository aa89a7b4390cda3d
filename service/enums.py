"""The closed vocabularies of the domain."""

from enum import StrEnum


class Scope(StrEnum):
    REQUESTS_WRITE = "requests:write"
    REQUESTS_READ = "requests:read"
    MODELS_WRITE = "models:write"
    MODELS_READ = "models:read"
    AUDIT_READ = "audit:read"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    ADMIN = "admin"


class WebhookEvent(StrEnum):
    """What deliveries announce (the ``event`` of each body)."""

    REQUEST_STATUS_CHANGED = "deletion_request.status_changed"
    VERSION_PUBLISHED = "model.version_published"
    AUDIT_COMPLETED = "audit.completed"


class Split(StrEnum):
    TRAIN = "train"
    HOLDOUT = "holdout"
    TEST = "test"


class SampleState(StrEnum):
    ACTIVE = "active"
    FORGOTTEN = "forgotten"


class DatasetStatus(StrEnum):
    REGISTERING = "registering"  # its register job indexes the source; no samples yet
    READY = "ready"
    FAILED = "failed"  # the source was refused (``error``); its name is free again


class ModelStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"  # created without training; waits for weights
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"


class VersionKind(StrEnum):
    TRAINED = "trained"
    UPLOADED = "uploaded"
    UNLEARNED = "unlearned"
    RETRAINED = "retrained"


class RequestStatus(StrEnum):
    PENDING = "pending"
    BATCHED = "batched"
    UNLEARNING = "unlearning"
    AUDITING = "auditing"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class JobKind(StrEnum):
    TRAIN = "train"  # trains version 1
    UNLEARN = "unlearn"  # one batch of requests -> one new version
    CACHE = "cache"  # builds an unlearner's per-version artifacts (e.g. PGU's SVD cache)
    AUDIT = "audit"  # audits a version (its own queue)
    EVALUATE = "evaluate"  # measures UA / RA / TA of a version that came without them
    REGISTER = "register"  # indexes a dataset's source (a large one; no model)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AUDITING = "auditing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


LIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.AUDITING)
# Jobs that write a model's lineage; the database allows one live such job per model.
LINEAGE_JOB_KINDS = (JobKind.TRAIN, JobKind.UNLEARN, JobKind.CACHE)
