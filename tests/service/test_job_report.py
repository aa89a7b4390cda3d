"""Every job's effort on record: the method's report stored on the job and served, a version
whose weights are its parent's marked as such, and a job's random draws fixed by the seed it
records (a retried attempt gives the same weights)."""

from __future__ import annotations

import time

import torch

from ml.unlearners import unlearner_class
from ml.unlearners.base import unchanged
from service.jobs import dispatch, lifecycle
from tests.helpers.app import configure, run_queued_jobs, train_keys
from workers.commands import run_job


def _batch(client, admin, model, count: int) -> str:
    """One request of ``count`` training samples, batched now; returns its job's id."""
    keys = train_keys(client, admin, model["dataset_id"], count)
    body = {"model_id": model["id"], "subject_id": "s", "sample_keys": keys}
    assert client.post("/v1/deletion-requests", headers=admin, json=body).status_code == 202
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    job_id = dispatch.dispatch_model(model["id"])
    assert job_id is not None
    return job_id


def _use(client, admin, model, unlearner: dict) -> None:
    response = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"unlearner": unlearner}
    )
    assert response.status_code == 200, response.text


def test_the_methods_report_is_stored_on_the_job_and_served(client, admin, ready_model):
    _use(client, admin, ready_model, {"name": "gradient_ascent", "params": {"stop": "none"}})
    job_id = _batch(client, admin, ready_model, 40)
    run_job(job_id)
    job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    assert job["status"] == "succeeded"
    report = job["report"]
    assert report["steps"] > 0 and report["stopped_by"]
    assert isinstance(job["seed"], int)
    version = client.get(f"/v1/models/{ready_model['id']}/versions/2", headers=admin).json()
    assert version["unchanged"] is False and version["unchanged_reason"] is None


def test_a_version_with_its_parents_weights_is_marked_unchanged(
    client, admin, ready_model, monkeypatch
):
    method = unlearner_class("finetune")

    def did_nothing(self, context):  # type: ignore[no-untyped-def]
        return unchanged(context.model, time.perf_counter(), "forget set already at the target")

    monkeypatch.setattr(method, "unlearn", did_nothing)
    job_id = _batch(client, admin, ready_model, 30)
    run_queued_jobs(ready_model["id"])  # the unlearning, then its audit
    base = f"/v1/models/{ready_model['id']}/versions"
    version = client.get(f"{base}/2", headers=admin).json()
    parent = client.get(f"{base}/1", headers=admin).json()
    assert version["artifact_sha256"] == parent["artifact_sha256"]
    assert version["unchanged"] is True
    assert "forget set already at the target" in version["unchanged_reason"]
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).json()["report"]["steps"] == 0
    audit = client.get(f"{base}/2/audit", headers=admin).json()
    assert audit["unchanged"] is True
    assert audit["evidence"].startswith("the version's weights are its parent's")
    assert audit["membership_signal"]["change"]["value"] == 0


def test_a_retried_attempt_draws_the_same_random_numbers(client, admin, ready_model, monkeypatch):
    """Retraining draws fresh initial weights and shuffles: both come from the job's seed,
    so the attempt that publishes gives the weights the failed one had made."""
    configure(monkeypatch, job_max_attempts=2)
    _use(client, admin, ready_model, {"name": "retrain"})
    job_id = _batch(client, admin, ready_model, 20)
    made: list[str] = []
    publish = lifecycle.publish

    def fail_once(session, *, job, model, result):  # type: ignore[no-untyped-def]
        made.append(result.weights_sha256)
        if len(made) == 1:
            raise RuntimeError("the worker died before publishing")
        return publish(session, job=job, model=model, result=result)

    monkeypatch.setattr(lifecycle, "publish", fail_once)
    run_job(job_id)  # the first attempt fails at its publish and is requeued
    torch.rand(13)  # other work in the process moves torch's global generator meanwhile
    run_job(job_id)
    job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert len(made) == 2 and made[0] == made[1]
    version = client.get(f"/v1/models/{ready_model['id']}/versions/2", headers=admin).json()
    assert version["artifact_sha256"] == made[0]
