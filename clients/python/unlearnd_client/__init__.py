"""A typed Python client for the unlearnd HTTP API, sync (:class:`Client`) and async
(:class:`AsyncClient`)."""

from unlearnd_client.client import AsyncClient, Client
from unlearnd_client.errors import (
    ApiError,
    AuthenticationError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TooLarge,
    WaitTimeout,
)
from unlearnd_client.models import (
    TERMINAL_STATUSES,
    BulkRejection,
    BulkResult,
    Caller,
    Certificate,
    Dataset,
    DeletionRequest,
    Job,
    JobProgress,
    Model,
    Page,
    Refresh,
    Sample,
    Version,
)
from unlearnd_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "TERMINAL_STATUSES",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "BulkRejection",
    "BulkResult",
    "Caller",
    "Certificate",
    "Client",
    "Conflict",
    "Dataset",
    "DeletionRequest",
    "Forbidden",
    "InvalidInput",
    "Job",
    "JobProgress",
    "Model",
    "NotFound",
    "Page",
    "RateLimited",
    "Refresh",
    "Sample",
    "ServiceUnavailable",
    "TooLarge",
    "Version",
    "WaitTimeout",
    "WebhookVerificationError",
    "verify_webhook",
]
