"""A request completes when its version is published *and audited*; a failed audit still
completes it (the data is out of the model) and says so; what a batch publishes keeps
every class the model forgot masked even while that version's audit is pending."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select

from ml.architectures import build_model
from ml.datasets import open_source
from service.artifacts import store
from service.db import session_scope
from service.enums import JobKind
from service.jobs import dispatch
from service.jobs.inputs import load_inputs
from service.jobs.lease import claim, release
from service.tables import Job
from tests.helpers.app import configure, run_queued_jobs, train_keys
from workers.commands import run_job
from workers.runners import RUNNERS


def _queued(model_id: str, kind: JobKind) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Job.id)
                .where(Job.model_id == model_id, Job.kind == kind, Job.status == "queued")
                .order_by(Job.created_at)
            )
        )


def _submit(client, admin, model_id: str, body: dict) -> str:
    response = client.post(
        "/v1/deletion-requests", headers=admin, json={"model_id": model_id, **body}
    )
    assert response.status_code == 202, response.text
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    assert dispatch.dispatch_model(model_id) is not None
    return response.json()["id"]


def _request(client, admin, request_id: str) -> dict:
    return client.get(f"/v1/deletion-requests/{request_id}", headers=admin).json()


def test_requests_complete_only_after_their_audit(client, admin, ready_model):
    model_id = ready_model["id"]
    keys = train_keys(client, admin, ready_model["dataset_id"], 20)
    request_id = _submit(client, admin, model_id, {"subject_id": "s", "sample_keys": keys})
    [unlearn_job] = _queued(model_id, JobKind.UNLEARN)
    run_job(unlearn_job)

    request = _request(client, admin, request_id)
    assert request["status"] == "auditing" and request["result_version"] == 2
    assert client.get(f"/v1/models/{model_id}", headers=admin).json()["head_version"] == 2
    certificate = client.get(f"/v1/deletion-requests/{request_id}/certificate", headers=admin)
    assert certificate.status_code == 409
    job = client.get(f"/v1/jobs/{unlearn_job}", headers=admin).json()
    assert job["status"] == "succeeded" and {"queued", "unlearning"} <= set(job["timings"])

    [audit_job] = _queued(model_id, JobKind.AUDIT)
    run_job(audit_job)
    request = _request(client, admin, request_id)
    assert [h["status"] for h in request["history"]][-2:] == ["auditing", "completed"]
    assert "audited" in request["history"][-1]["detail"]
    certificate = client.get(f"/v1/deletion-requests/{request_id}/certificate", headers=admin)
    assert certificate.status_code == 200
    assert certificate.json()["audit"]["verdict"] == "no_reference"
    assert client.get(f"/v1/jobs/{audit_job}", headers=admin).json()["status"] == "succeeded"


def test_a_failed_audit_completes_the_requests_and_says_so(client, admin, ready_model, monkeypatch):
    configure(monkeypatch, job_max_attempts=1)
    model_id = ready_model["id"]
    keys = train_keys(client, admin, ready_model["dataset_id"], 5)
    request_id = _submit(client, admin, model_id, {"subject_id": "s", "sample_keys": keys})
    run_job(_queued(model_id, JobKind.UNLEARN)[0])

    def broken(attempt, heartbeat):
        raise RuntimeError("the audit worker ran out of memory")

    monkeypatch.setitem(RUNNERS, JobKind.AUDIT, broken)
    [audit_job] = _queued(model_id, JobKind.AUDIT)
    run_job(audit_job)
    assert client.get(f"/v1/jobs/{audit_job}", headers=admin).json()["status"] == "failed"
    request = _request(client, admin, request_id)
    assert request["status"] == "completed" and request["result_version"] == 2
    assert "ran out of memory" in request["history"][-1]["detail"]


def _predicts(model_id: str, client, admin, number: int, label: int) -> bool:
    version = client.get(f"/v1/models/{model_id}/versions/{number}", headers=admin).json()
    network = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10)
    network.load_state_dict(store().get_tensors(version["artifact_sha256"]))
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    with torch.no_grad():
        outputs = network.eval()(adapter.read(np.arange(len(adapter.index().keys))))
    return bool((outputs.argmax(1) == label).any())


def test_a_class_stays_masked_while_its_version_is_being_audited(client, admin, ready_model):
    model_id = ready_model["id"]
    _submit(client, admin, model_id, {"subject_id": "class-4", "class_labels": [4]})
    run_job(_queued(model_id, JobKind.UNLEARN)[0])
    assert _queued(model_id, JobKind.AUDIT), "version 2's audit is still to run"

    keys = train_keys(client, admin, ready_model["dataset_id"], 3)
    _submit(client, admin, model_id, {"subject_id": "s", "sample_keys": keys})
    [job_id] = _queued(model_id, JobKind.UNLEARN)
    attempt = claim(job_id)
    assert attempt is not None
    assert load_inputs(attempt).sets.masked_classes == [4]
    release(attempt, "claimed by the test to look at its inputs")
    run_job(job_id)
    assert not _predicts(model_id, client, admin, 3, 4)
    run_queued_jobs(model_id)
