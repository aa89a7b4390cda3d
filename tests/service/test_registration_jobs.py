"""A large dataset (or any, with ``Prefer: respond-async``) is registered by a job: 202 at
once with the dataset ``registering`` and its job, the same samples as a registration in
the request once the job ran, its progress heard on the way; a source the job refuses
fails the dataset (no samples, no retry) and frees its name; a dataset that is not ready
has no models, no refresh and no samples; a stale attempt writes nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ml import file_sources
from ml.datasets import clear_cache
from service import outbox
from service.datasets import service as datasets_service
from service.db import session_scope
from service.jobs import dispatch, lease
from service.tables import AuditLogEntry, Job, JobEvent, Sample, utcnow
from tests.helpers.app import configure, create_model, run_dataset_jobs
from tests.helpers.own_data import SIZE, write_csv, write_pngs, write_tree
from workers.heartbeat import Heartbeat

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def root(env) -> Path:
    return Path(env["data_root"])


def _post(client, admin, name: str, source: dict[str, Any], headers=None):
    return client.post(
        "/v1/datasets",
        headers={**admin, **(headers or {})},
        json={"name": name, "source": source, "holdout_fraction": 0.25, "seed": 3},
    )


def _samples(dataset_id: str) -> list[tuple[str, str, int, str | None]]:
    with session_scope() as session:
        rows = session.execute(
            select(Sample.key, Sample.split, Sample.label, Sample.fingerprint)
            .where(Sample.dataset_id == dataset_id)
            .order_by(Sample.position)
        ).all()
    return [tuple(row) for row in rows]


def _job(client, admin, job_id: str) -> dict:
    answer = client.get(f"/v1/jobs/{job_id}", headers=admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_respond_async_registers_by_a_job_what_the_request_would(
    client, admin, root, sent_messages, monkeypatch
):
    write_csv(root / "digits.csv", write_pngs(root))
    source = {"kind": "manifest", "path": "digits.csv"}
    now = _post(client, admin, "now", source)
    assert now.status_code == 201, now.text
    assert now.json()["status"] == "ready" and now.json()["job_id"] is None
    assert "Preference-Applied" not in now.headers

    answer = _post(client, admin, "later", source, ASYNC)
    assert answer.status_code == 202, answer.text
    later = answer.json()
    assert answer.headers["Location"] == f"/v1/datasets/{later['id']}"
    assert answer.headers["Preference-Applied"] == "respond-async"
    assert later["status"] == "registering" and later["error"] is None
    assert later["num_classes"] is None and later["counts"] is None
    assert later["input_shape"] is None
    job = _job(client, admin, later["job_id"])
    assert job["kind"] == "register" and job["status"] == "queued"
    assert job["model_id"] is None and job["dataset_id"] == later["id"]
    assert (outbox.RUN_JOB, [job["id"]], outbox.AUDIT) in sent_messages  # not the GPU queue
    listed = client.get("/v1/jobs", headers=admin, params={"dataset_id": later["id"]}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]

    # Not ready: no samples to list, no model, no refresh, the name is taken.
    samples = client.get(f"/v1/datasets/{later['id']}/samples", headers=admin)
    assert samples.status_code == 200 and samples.json()["items"] == []
    refused = client.post(
        "/v1/models",
        headers=admin,
        json={
            "name": "too-soon",
            "dataset_id": later["id"],
            "architecture": {"name": "mlp", "params": {"hidden": [8]}},
            "unlearner": {"name": "finetune", "params": {"epochs": 1}},
        },
    )
    assert refused.status_code == 409 and "registering" in refused.json()["detail"]
    refresh = client.post(f"/v1/datasets/{later['id']}/refresh", headers=admin)
    assert refresh.status_code == 409 and "registering" in refresh.json()["detail"]
    assert _post(client, admin, "later", source, ASYNC).status_code == 409

    heard: list[tuple[str, int, int]] = []
    report = Heartbeat.report

    def counted(self, stage: str, step: int, total: int) -> None:
        heard.append((stage, step, total))
        report(self, stage, step, total)

    monkeypatch.setattr(Heartbeat, "report", counted)
    monkeypatch.setattr(file_sources, "PROGRESS_EVERY", 16)
    assert run_dataset_jobs(later["id"]) == [job["id"]]

    ready = client.get(f"/v1/datasets/{later['id']}", headers=admin).json()
    assert ready["status"] == "ready" and ready["job_id"] == job["id"]
    for field in ("num_classes", "input_shape", "counts", "source"):
        assert ready[field] == now.json()[field], field
    assert _samples(later["id"]) == _samples(now.json()["id"])
    done = _job(client, admin, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert "registering" in done["timings"]
    validating = [(step, total) for stage, step, total in heard if stage == "validating"]
    assert validating[-1] == (SIZE, SIZE)
    assert [step for step, _ in validating if step] == [*range(16, SIZE, 16), SIZE]
    assert ("storing", 0, SIZE) in heard
    with session_scope() as session:
        logged = session.scalars(
            select(AuditLogEntry.subject_id).where(AuditLogEntry.action == "dataset.registered")
        ).all()
    assert sorted(logged) == sorted([now.json()["id"], later["id"]])
    model = create_model(client, admin, later["id"])  # ready: models may use it
    assert model["dataset_id"] == later["id"]


def test_a_source_past_the_sync_limit_is_a_job_without_asking(client, admin, root, monkeypatch):
    write_tree(root)
    configure(monkeypatch, dataset_sync_max_samples=SIZE - 1)
    answer = _post(client, admin, "tree", {"kind": "imagefolder", "root": "tree"})
    assert answer.status_code == 202, answer.text
    assert "Preference-Applied" not in answer.headers
    assert answer.json()["status"] == "registering"
    run_dataset_jobs(answer.json()["id"])
    ready = client.get(f"/v1/datasets/{answer.json()['id']}", headers=admin).json()
    assert (
        ready["status"] == "ready" and ready["counts"]["train"] + ready["counts"]["holdout"] == SIZE
    )

    configure(monkeypatch, dataset_sync_max_samples=SIZE)  # at the limit: in the request
    assert (
        _post(client, admin, "tree-2", {"kind": "imagefolder", "root": "tree"}).status_code == 201
    )


def test_what_needs_no_sample_is_refused_at_submission(client, admin, root):
    (root / "nokey.csv").write_text("name,label,path\na,0,x.png\n")
    for source, message in (
        ({"kind": "manifest", "path": "missing.csv"}, "does not exist"),
        ({"kind": "manifest", "path": "../outside.csv"}, "outside the data root"),
        ({"kind": "manifest", "path": "nokey.csv"}, "no 'key' column"),
        ({"kind": "imagefolder", "root": "nowhere"}, "does not exist"),
    ):
        answer = _post(client, admin, "refused", source, ASYNC)
        assert answer.status_code == 422, answer.text
        assert message in answer.json()["detail"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_a_bad_image_found_by_the_job_fails_the_dataset_at_once_and_frees_its_name(
    client, admin, root
):
    write_csv(root / "digits.csv", write_pngs(root))
    good = (root / "img" / "7.png").read_bytes()
    (root / "img" / "7.png").write_bytes(b"not a png at all")
    source = {"kind": "manifest", "path": "digits.csv"}
    in_request = _post(client, admin, "digits", source)
    assert in_request.status_code == 422
    message = in_request.json()["detail"]
    assert "digit-007" in message

    first = _post(client, admin, "digits", source, ASYNC).json()
    run_dataset_jobs(first["id"])
    failed = client.get(f"/v1/datasets/{first['id']}", headers=admin).json()
    assert failed["status"] == "failed" and failed["error"] == message
    assert failed["counts"] is None
    assert _samples(first["id"]) == []
    job = _job(client, admin, first["job_id"])
    assert job["status"] == "failed" and job["attempts"] == 1 and job["error"] == message
    with session_scope() as session:
        moves = session.scalars(
            select(JobEvent.status).where(JobEvent.job_id == job["id"]).order_by(JobEvent.id)
        ).all()
    assert list(moves) == ["running", "failed"]  # not requeued

    (root / "img" / "7.png").write_bytes(good)
    again = _post(client, admin, "digits", source, ASYNC)
    assert again.status_code == 202, again.text  # the failed one gave its name up
    assert client.get(f"/v1/datasets/{first['id']}", headers=admin).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=admin).status_code == 404
    run_dataset_jobs(again.json()["id"])
    ready = client.get(f"/v1/datasets/{again.json()['id']}", headers=admin).json()
    assert ready["status"] == "ready" and len(_samples(ready["id"])) == SIZE


def test_other_errors_are_retried_and_fail_the_dataset_once_attempts_are_spent(
    client, admin, root, monkeypatch
):
    write_tree(root)
    configure(monkeypatch, job_max_attempts=2)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise OSError("the share went away")

    monkeypatch.setattr(datasets_service, "index_source", broken)
    dataset = _post(client, admin, "flaky", {"kind": "imagefolder", "root": "tree"}, ASYNC).json()
    run_dataset_jobs(dataset["id"])
    assert len(calls) == 2  # requeued once, then spent
    failed = client.get(f"/v1/datasets/{dataset['id']}", headers=admin).json()
    assert failed["status"] == "failed" and "the share went away" in failed["error"]
    job = _job(client, admin, dataset["job_id"])
    assert job["status"] == "failed" and job["attempts"] == 2


def test_a_stale_attempt_writes_nothing(client, admin, root):
    write_tree(root)
    dataset = _post(client, admin, "stale", {"kind": "imagefolder", "root": "tree"}, ASYNC).json()
    first = lease.claim(dataset["job_id"])
    assert first is not None and first.model_id is None and first.dataset_id == dataset["id"]
    with session_scope() as session:
        session.get(Job, dataset["job_id"]).lease_expires_at = utcnow() - timedelta(seconds=1)
    dispatch.sweep()  # requeued: the first attempt no longer owns the job
    with pytest.raises(lease.LeaseLost):
        datasets_service.register_in_job(first, lambda stage, step, total: None)
    assert _samples(dataset["id"]) == []
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=admin).json()["status"] == (
        "registering"
    )
    run_dataset_jobs(dataset["id"])  # the next attempt registers it
    assert len(_samples(dataset["id"])) == SIZE


def test_the_embedded_default_runs_the_registration_in_process(sqlite_env):
    # `make run`: SQLite and the in-process worker, which takes every queue but callbacks'.
    import time

    from fastapi.testclient import TestClient

    from tests.helpers.app import make_key
    from workers.runtime import create_app

    root = Path(sqlite_env["data_root"])
    write_tree(root)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        admin = make_key(["admin"])
        answer = _post(client, admin, "tree", {"kind": "imagefolder", "root": "tree"}, ASYNC)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dataset = client.get(f"/v1/datasets/{answer.json()['id']}", headers=admin).json()
            if dataset["status"] != "registering":
                break
            time.sleep(0.2)
        assert dataset["status"] == "ready", dataset
        assert len(_samples(dataset["id"])) == SIZE


def test_a_name_registered_meanwhile_by_another_request_is_a_409_not_a_500(
    client, admin, root, monkeypatch
):
    # Two POSTs with one name, both past the name check before either inserts: the second
    # meets the unique constraint, and answers as the check would have.
    write_csv(root / "digits.csv", write_pngs(root))
    source = {"kind": "manifest", "path": "digits.csv"}
    assert _post(client, admin, "twice", source).status_code == 201
    monkeypatch.setattr(datasets_service, "_check_name", lambda *args: None)  # checked "before"
    answer = _post(client, admin, "twice", source)
    assert answer.status_code == 409, answer.text
    assert "already exists" in answer.json()["detail"]
