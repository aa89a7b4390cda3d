"""Fixtures: a fresh Postgres database per test session (tables truncated per test), an
embedded SQLite variant, the HTTP client, keys per scope, and factories that go through the
API. Outside CI a missing Postgres/Redis skips with a reason; with CI=true it fails."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service import rate_limits
from service.db import reset_engine, session_scope
from service.keys import service as keys
from service.settings import get_settings

torch.set_num_threads(1)

IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get(
    "UNLEARN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The tests flush this Redis database; runs side by side (two checkouts) need one each.
REDIS_TEST_DB = int(os.environ.get("UNLEARN_TEST_REDIS_DB", "11"))
SCOPES = ["requests:write", "requests:read", "models:write", "models:read", "audit:read", "admin"]


def service_missing(what: str) -> None:
    """Skip outside CI; in CI a missing service is a failure, never a skip."""
    message = f"{what} is not reachable; start it or run in CI"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def configure(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"UNLEARN_{name.upper()}", str(value))
    get_settings.cache_clear()
    reset_engine()
    keys.forget_cached_keys()
    rate_limits.limiter_for.cache_clear()  # buckets start empty in every test


@pytest.fixture(autouse=True)
def sent_messages() -> Iterator[list[tuple[str, list[str], str]]]:
    """Messages the service sends to workers, kept here instead of travelling: tests run
    jobs themselves (``run_queued_jobs``) or start a runtime that installs its own sender."""
    from service import outbox

    sent: list[tuple[str, list[str], str]] = []
    outbox.install_sender(lambda task, args, queue: sent.append((task, args, queue)))
    yield sent


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A scratch database migrated to head, dropped at the end of the session."""
    if not _port_open("127.0.0.1", 5432):
        service_missing("Postgres at 127.0.0.1:5432")
    name = f"unlearnd_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    from service.migrate import upgrade

    upgrade(url)
    yield url
    reset_engine()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _port_open(REDIS_HOST, REDIS_PORT):
        service_missing("Redis at 127.0.0.1:6379")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"


TABLES = [
    "callback_attempts",
    "callback_deliveries",
    "audits",
    "version_artifacts",
    "tombstones",
    "idempotency_keys",
    "request_events",
    "job_events",
    "model_versions",
    "deletion_requests",
    "jobs",
    "models",
    "samples",
    "datasets",
    "api_keys",
    "tenants",
    "audit_log",
    "change_stamps",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_database: str) -> dict[str, str]:
    """Settings for one test on Postgres, tables emptied first."""
    engine = create_engine(pg_database)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    engine.dispose()
    data_root = tmp_path / "data"
    data_root.mkdir()
    values = {
        "database_url": pg_database,
        "state_dir": str(tmp_path / "state"),
        "data_root": str(data_root),
        "broker_url": "",
        "job_lease_seconds": "30",
    }
    configure(monkeypatch, **values)
    return values


@pytest.fixture
def sqlite_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The embedded default: SQLite under the state folder, in-process worker."""
    values = {
        "state_dir": str(tmp_path / "state"),
        "data_root": str(tmp_path),
        "database_url": "",
        "broker_url": "",
    }
    configure(monkeypatch, **values)
    from service.migrate import upgrade

    upgrade()
    return values


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def make_key(scopes: list[str], tenant: str = "acme") -> dict[str, str]:
    with session_scope() as session:
        _, plaintext = keys.create_key(session, tenant_name=tenant, scopes=scopes)
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def admin(env: dict[str, str]) -> dict[str, str]:
    return make_key(["admin"])


@pytest.fixture
def key_for(env: dict[str, str]) -> Callable[..., dict[str, str]]:
    return make_key


DIGITS = {"kind": "builtin", "name": "sklearn-digits"}
FAST_TRAINING = {"epochs": 3, "batch_size": 64, "lr": 0.003}


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
    from sqlalchemy import select

    from service.tables import Job
    from workers.commands import run_job

    ran = []
    while True:
        with session_scope() as session:
            job_id = session.scalar(
                select(Job.id)
                .where(Job.model_id == model_id, Job.status == "queued")
                .order_by(Job.created_at)
            )
        if job_id is None:
            return ran
        run_job(job_id)
        ran.append(job_id)


@pytest.fixture
def ready_model(client: TestClient, admin: dict[str, str]) -> dict:
    """A trained digits MLP at version 1."""
    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    model = client.get(f"/v1/models/{model['id']}", headers=admin).json()
    assert model["status"] == "ready" and model["head_version"] == 1
    return {**model, "dataset": dataset}


def train_keys(client: TestClient, headers: dict[str, str], dataset_id: str, n: int) -> list[str]:
    response = client.get(
        f"/v1/datasets/{dataset_id}/samples", params={"split": "train", "limit": n}, headers=headers
    )
    return [item["key"] for item in response.json()["items"]]
