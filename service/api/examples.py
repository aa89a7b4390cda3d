"""An example of every JSON request body (and webhook payload), by its OpenAPI component:
``service.api.openapi`` puts each on its schema and on the operations that take it, and the
tests check that every body has one and that each is valid for its model (so they never
drift from it)."""

from __future__ import annotations

from typing import Any

__all__ = ["REQUEST_EXAMPLES"]

_FORGET_KEYS = {
    "model_id": "0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d",
    "subject_id": "user-8812",
    "sample_keys": ["train/00017", "train/00042"],
}
_FORGET_CLASS = {
    "model_id": "0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d",
    "subject_id": "label-owner-3",
    "class_labels": [3],
}

REQUEST_EXAMPLES: dict[str, Any] = {
    "DatasetCreate": {
        "name": "digits",
        "source": {"kind": "builtin", "name": "sklearn-digits"},
        "holdout_fraction": 0.1,
    },
    "ModelCreate": {
        "name": "digits-mlp",
        "dataset_id": "5c1f0e2a-7d3b-4c8e-a1f6-2b9d8e7c6a5f",
        "architecture": {"name": "mlp", "params": {"hidden": [64]}},
        "unlearner": {"name": "finetune", "params": {"epochs": 1}},
        "batching": {"max_requests": 100, "max_wait_seconds": 300},
        "training": {"epochs": 3, "batch_size": 64, "lr": 0.003},
    },
    "ModelUpdate": {
        "unlearner": {"name": "finetune", "params": {"epochs": 2}},
        "batching": {"max_requests": 10, "max_wait_seconds": 60},
    },
    "DeletionRequestCreate": _FORGET_KEYS,
    "Body_create_deletion_requests_bulk": {"requests": [_FORGET_KEYS, _FORGET_CLASS]},
    "AuditCreate": {"reference": "retrain"},
    "KeyCreate": {"name": "product-backend", "scopes": ["requests:write", "requests:read"]},
    "KeyRotate": {"grace_seconds": 3600},
    "WebhookCreate": {
        "url": "https://hooks.example.com/unlearn",
        "events": ["model.version_published", "audit.completed"],
        "model_id": "0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d",
        "description": "serving: reload the weights",
    },
    "WebhookUpdate": {"events": ["model.version_published"]},
    # What the service sends (the OpenAPI document's webhooks), not what it takes.
    "DeletionRequestStatusChanged": {
        "event": "deletion_request.status_changed",
        "delivery_id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
        "request_id": "1b2c3d4e-5f60-4718-92a3-b4c5d6e7f809",
        "model_id": "0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d",
        "status": "completed",
        "at": "2026-12-06T11:40:00+00:00",
        "result_version": 2,
        "error": None,
        "source_erasable": True,
    },
    "VersionPublished": {
        "event": "model.version_published",
        "delivery_id": "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "at": "2026-12-06T11:39:00+00:00",
        "model_id": "0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d",
        "version": 2,
        "parent": 1,
        "kind": "unlearned",
        "deletion_request_ids": ["1b2c3d4e-5f60-4718-92a3-b4c5d6e7f809"],
        "weights_sha256": "9f2c" + "0" * 60,
        "weights_url": "https://unlearn.example.com/v1/models/0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d/versions/2/weights",
    },
    "AuditCompleted": {
        "event": "audit.completed",
        "delivery_id": "8b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
        "at": "2026-12-06T11:39:30+00:00",
        "model_id": "0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d",
        "version": 2,
        "verdict": "no_reference",
        "job_id": "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
        "reference": False,
        "audit_url": "https://unlearn.example.com/v1/models/0d9b5a6c-8f4e-4b8a-9d59-3f0a2c6e1b7d/versions/2/audit",
    },
}
