"""Requests -> one job -> a new version, end to end: on the embedded default, and through
real Postgres, Redis, `unlearnd worker` and `unlearnd beat` processes (a worker killed with
SIGKILL mid-job included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import configure, create_dataset, create_model, make_key, train_keys

UNLEARND = str(Path(sys.executable).with_name("unlearnd"))


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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


class Processes:
    def __init__(self, settings: dict[str, str], log_dir: Path) -> None:
        self.env = {
            **os.environ,
            **{f"UNLEARN_{k.upper()}": v for k, v in settings.items()},
            "OMP_NUM_THREADS": "1",
        }
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{args[0]}-{len(self.running)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [UNLEARND, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log"))
        )


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


@pytest.mark.slow
def test_worker_killed_mid_job_is_recovered(api, admin, processes):
    from sqlalchemy import func, select

    from service.db import session_scope
    from service.tables import Job, ModelVersion, RequestEvent

    worker = processes.start("worker", "--queues", "gpu,audit,control")
    processes.start("beat")
    dataset = create_dataset(api, admin)
    # A long fine-tune so that the kill lands in the middle of the job.
    model = create_model(
        api,
        admin,
        dataset["id"],
        architecture={"name": "small_cnn"},
        unlearner={"name": "finetune", "params": {"epochs": 60}},
    )
    url = f"/v1/models/{model['id']}"
    try:
        wait_for(lambda: api.get(url, headers=admin).json()["head_version"] == 1, 180, "v1")
        keys = train_keys(api, admin, dataset["id"], 4)
        requests = [
            submit(api, admin, model, keys[:2], "a"),
            submit(api, admin, model, keys[2:], "b"),
        ]
        api.post(f"{url}/flush", headers=admin)

        def running_job():
            jobs = api.get(
                "/v1/jobs", headers=admin, params={"model_id": model["id"], "status": "running"}
            ).json()["items"]
            return next(
                (j for j in jobs if j["kind"] == "unlearn" and j["progress"].get("step", 0) >= 2),
                None,
            )

        job = wait_for(running_job, 120, "the unlearning job to be mid-way")
        processes.kill(worker)
        processes.start("worker", "--queues", "gpu,audit,control")
        wait_for(
            lambda: all(status_of(api, admin, r) == "completed" for r in requests),
            240,
            "the requeued job to complete",
        )
    except AssertionError:
        print(processes.logs())
        raise
    final = api.get(f"/v1/jobs/{job['id']}", headers=admin).json()
    assert final["status"] == "succeeded" and final["attempts"] == 2
    assert final["result_version"] == 2
    with session_scope() as session:
        versions = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .where(ModelVersion.model_id == model["id"])
        )
        assert versions == 2, "exactly one new version"
        for request_id in requests:
            completed = session.scalar(
                select(func.count())
                .select_from(RequestEvent)
                .where(RequestEvent.request_id == request_id, RequestEvent.status == "completed")
            )
            assert completed == 1
        assert session.get(Job, job["id"]).attempts == 2
    assert api.get(url, headers=admin).json()["head_version"] == 2
