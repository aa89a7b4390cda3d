"""Requests -> one job -> a new version, end to end: on the embedded default, and through
real Postgres, Redis, `unlearnd worker` and `unlearnd beat` processes (workers killed
mid-job, and the other faults, are in test_drills.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers.app import configure, create_dataset, create_model, make_key, train_keys
from tests.helpers.processes import Processes, wait_for


def submit(client, headers, model, keys, subject):
    response = client.post(
        "/v1/deletion-requests",
        headers=headers,
        json={"model_id": model["id"], "subject_id": subject, "sample_keys": keys},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status_of(client, headers, request_id):
    return client.get(f"/v1/deletion-requests/{request_id}", headers=headers).json()["status"]


def lifecycle(client: TestClient, headers: dict[str, str], timeout: float) -> None:
    """The shared scenario: train v1, two requests -> v2, one more -> v3."""
    dataset = create_dataset(client, headers)
    model = create_model(client, headers, dataset["id"])
    url = f"/v1/models/{model['id']}"
    wait_for(
        lambda: client.get(url, headers=headers).json()["head_version"] == 1,
        timeout,
        "version 1 to be trained",
    )
    keys = train_keys(client, headers, dataset["id"], 6)
    first = [
        submit(client, headers, model, keys[:2], "alice"),
        submit(client, headers, model, keys[2:4], "bob"),
    ]
    assert client.post(f"{url}/flush", headers=headers).status_code == 202
    wait_for(
        lambda: all(status_of(client, headers, r) == "completed" for r in first),
        timeout,
        "the first batch to complete",
    )
    versions = client.get(f"{url}/versions", headers=headers).json()["items"]
    assert [v["number"] for v in versions] == [2, 1]
    v2 = versions[0]
    assert v2["parent"] == 1 and v2["kind"] == "unlearned"
    assert sorted(v2["deletion_request_ids"]) == sorted(first)
    assert v2["forgotten_samples"] == 4 and set(v2["metrics"]) >= {"ua", "ra", "ta"}
    jobs = {
        client.get(f"/v1/deletion-requests/{r}", headers=headers).json()["job_id"] for r in first
    }
    assert len(jobs) == 1, "both requests belong to one job"
    for key in keys[:4]:
        sample = client.get(f"/v1/datasets/{dataset['id']}/samples/{key}", headers=headers).json()
        assert sample["state"] == "forgotten"
        assert sample["forgotten_by"][0]["version"] == 2
    history = client.get(f"/v1/deletion-requests/{first[0]}", headers=headers).json()["history"]
    assert [h["status"] for h in history] == [
        "pending",
        "batched",
        "unlearning",
        "auditing",
        "completed",
    ]

    second = submit(client, headers, model, keys[4:], "carol")
    client.post(f"{url}/flush", headers=headers)
    wait_for(
        lambda: status_of(client, headers, second) == "completed",
        timeout,
        "the second batch to complete",
    )
    v3 = client.get(f"{url}/versions/3", headers=headers).json()
    assert v3["parent"] == 2 and v3["deletion_request_ids"] == [second]
    assert v3["forgotten_total"] == 6
    assert client.get(url, headers=headers).json()["head_version"] == 3


def test_lifecycle_embedded_default(sqlite_env, monkeypatch):
    configure(monkeypatch, dispatch_interval_seconds=0.3, sweep_interval_seconds=0.3)
    from workers.runtime import create_app

    headers = make_key(["admin"])
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        lifecycle(client, headers, timeout=120)


# ----------------------------------------------------------------- real processes


@pytest.fixture
def broker_env(env, redis_url, monkeypatch):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    settings = {
        "broker_url": redis_url,
        "job_lease_seconds": 3,
        "dispatch_interval_seconds": 0.5,
        "sweep_interval_seconds": 1,
    }
    configure(monkeypatch, **settings)
    return {**env, **{k: str(v) for k, v in settings.items()}}


@pytest.fixture
def processes(broker_env, tmp_path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Processes(broker_env, logs)
    yield running
    running.stop_all()


@pytest.fixture
def api(broker_env) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.slow
def test_lifecycle_postgres_redis_worker_processes(api, admin, processes):
    processes.start("worker", "--queues", "gpu,audit,control")
    processes.start("beat")
    try:
        lifecycle(api, admin, timeout=180)
    except AssertionError:
        print(processes.logs())
        raise
