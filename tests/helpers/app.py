"""The service under test, in the test process: its settings, API keys, datasets and models
created through the API, and the queued jobs run here (no worker needed)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import rate_limits
from service.db import reset_engine, session_scope
from service.keys import service as keys
from service.settings import get_settings

DIGITS = {"kind": "builtin", "name": "sklearn-digits"}
FAST_TRAINING = {"epochs": 3, "batch_size": 64, "lr": 0.003}


def configure(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"UNLEARN_{name.upper()}", str(value))
    get_settings.cache_clear()
    reset_engine()
    keys.forget_cached_keys()
    rate_limits.limiter_for.cache_clear()  # buckets start empty in every test


def make_key(scopes: list[str], tenant: str = "acme") -> dict[str, str]:
    with session_scope() as session:
        _, plaintext = keys.create_key(session, tenant_name=tenant, scopes=scopes)
    return {"Authorization": f"Bearer {plaintext}"}


def create_dataset(client: TestClient, headers: dict[str, str], name: str = "digits") -> dict:
    response = client.post(
        "/v1/datasets",
        headers=headers,
        json={"name": name, "source": DIGITS, "holdout_fraction": 0.1},
    )
    assert response.status_code == 201, response.text
    return response.json()


def create_model(
    client: TestClient, headers: dict[str, str], dataset_id: str, **overrides: Any
) -> dict:
    body = {
        "name": f"model-{uuid.uuid4().hex[:6]}",
        "dataset_id": dataset_id,
        "architecture": {"name": "mlp", "params": {"hidden": [64]}},
        "unlearner": {"name": "finetune", "params": {"epochs": 1}},
        "batching": {"max_requests": 100, "max_wait_seconds": 3600},
        "training": FAST_TRAINING,
        **overrides,
    }
    response = client.post("/v1/models", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def run_queued_jobs(model_id: str) -> list[str]:
    """Run this model's queued jobs in the test process, oldest first (no worker needed)."""
    from service.tables import Job

    return _run_queued(Job.model_id == model_id)


def run_dataset_jobs(dataset_id: str) -> list[str]:
    """Run this dataset's queued jobs (its registration) in the test process."""
    from service.tables import Job

    return _run_queued(Job.dataset_id == dataset_id)


def _run_queued(owned: Any) -> list[str]:
    """Run the queued jobs matching ``owned`` (a condition on ``Job``), oldest first, until
    none is left (a job may queue the next)."""
    from sqlalchemy import select

    from service.tables import Job
    from workers.commands import run_job

    ran = []
    while True:
        with session_scope() as session:
            job_id = session.scalar(
                select(Job.id).where(owned, Job.status == "queued").order_by(Job.created_at)
            )
        if job_id is None:
            return ran
        run_job(job_id)
        ran.append(job_id)


def train_keys(client: TestClient, headers: dict[str, str], dataset_id: str, n: int) -> list[str]:
    response = client.get(
        f"/v1/datasets/{dataset_id}/samples", params={"split": "train", "limit": n}, headers=headers
    )
    return [item["key"] for item in response.json()["items"]]


def forget_now(
    client: TestClient, headers: dict[str, str], model_id: str, sample_keys: list[str]
) -> dict:
    """One deletion request for ``sample_keys``, batched at once (flush, dispatch) and
    unlearned with every follow-up job run here; the request as accepted."""
    from service.jobs import dispatch

    response = client.post(
        "/v1/deletion-requests",
        headers=headers,
        json={"model_id": model_id, "subject_id": "s", "sample_keys": sample_keys},
    )
    assert response.status_code == 202, response.text
    client.post(f"/v1/models/{model_id}/flush", headers=headers)
    assert dispatch.dispatch_model(model_id) is not None
    run_queued_jobs(model_id)
    return response.json()
