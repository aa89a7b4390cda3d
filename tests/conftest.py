"""Fixtures: a fresh Postgres database per test session (tables truncated per test), an
embedded SQLite variant, the HTTP client, keys per scope, and a trained model. The helpers
they use, and the tests too, are in ``tests/helpers``. Outside CI a missing Postgres/Redis
skips with a reason; with CI=true it fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.db import reset_engine
from tests.helpers.app import configure, create_dataset, create_model, make_key, run_queued_jobs
from tests.helpers.network import port_open, service_missing
from tests.helpers.plugins import forget_modules, install_example

torch.set_num_threads(1)

PG_ADMIN_URL = os.environ.get(
    "UNLEARN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The tests flush this Redis database; runs side by side (two checkouts) need one each.
REDIS_TEST_DB = int(os.environ.get("UNLEARN_TEST_REDIS_DB", "11"))
SCOPES = [
    "requests:write",
    "requests:read",
    "models:write",
    "models:read",
    "audit:read",
    "webhooks:read",
    "webhooks:write",
    "admin",
]


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
    if not port_open("127.0.0.1", 5432):
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
    if not port_open(REDIS_HOST, REDIS_PORT):
        service_missing("Redis at 127.0.0.1:6379")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"


TABLES = [
    "callback_attempts",
    "callback_deliveries",
    "webhook_subscriptions",
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


@pytest.fixture
def admin(env: dict[str, str]) -> dict[str, str]:
    return make_key(["admin"])


@pytest.fixture
def key_for(env: dict[str, str]) -> Callable[..., dict[str, str]]:
    return make_key


@pytest.fixture
def ready_model(client: TestClient, admin: dict[str, str]) -> dict:
    """A trained digits MLP at version 1."""
    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    model = client.get(f"/v1/models/{model['id']}", headers=admin).json()
    assert model["status"] == "ready" and model["head_version"] == 1
    return {**model, "dataset": dataset}


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """The example architecture plug-in installed for this test (``tests/helpers/plugins``:
    a dist-info folder on sys.path, no pip, no network); yields the names it registered."""
    yield install_example(monkeypatch, tmp_path / "site")
    forget_modules()
