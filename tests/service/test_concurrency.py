"""The database, not hope, keeps requests in one job and a model's lineage a chain."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.db import session_scope
from service.enums import JobKind, JobStatus
from service.jobs import dispatch, lease, lifecycle
from service.tables import DeletionRequest, Job, utcnow
from tests.helpers.app import train_keys
from workers.commands import run_job
from workers.runners import RUNNERS


def _race(n: int, target) -> list:
    barrier = threading.Barrier(n)
    results: list = []

    def run() -> None:
        barrier.wait()
        results.append(target())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _pending(client, admin, model, count):
    keys = train_keys(client, admin, model["dataset_id"], count)
    for i, key in enumerate(keys):
        response = client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": model["id"], "subject_id": f"s{i}", "sample_keys": [key]},
        )
        assert response.status_code == 202


def test_racing_dispatchers_never_share_a_request(client, admin, ready_model, monkeypatch):
    _pending(client, admin, ready_model, 40)
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    # Drop the friendly pre-check so every racer reaches the claim and the insert.
    monkeypatch.setattr(lifecycle, "live_lineage_job", lambda session, model_id: None)
    created = [job for job in _race(6, lambda: dispatch.dispatch_model(ready_model["id"])) if job]
    assert len(created) == 1
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.kind == JobKind.UNLEARN)).all()
        requests = session.scalars(select(DeletionRequest)).all()
    assert len(jobs) == 1
    claimed = [request_id for job in jobs for request_id in job.request_ids]
    assert len(claimed) == len(set(claimed)) == 40
    assert {r.job_id for r in requests} == {jobs[0].id}
    assert {r.status for r in requests} == {"batched"}


def test_a_dispatcher_waits_for_the_one_claiming_before_it(client, admin, ready_model, monkeypatch):
    """The interleaving the race above can only hit by chance, made certain: the first
    dispatcher holds every request when the second starts, then lets them go. Racing on the
    rows alone, the second would find nothing, clear the flush and leave the batch waiting;
    taking turns on the model row, it claims the whole batch."""
    _pending(client, admin, ready_model, 40)
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    claimed, release = threading.Event(), threading.Event()
    batch, calls = lifecycle.batch, []

    def first_pauses_then_fails(session, model, requests):
        calls.append(len(requests))
        if len(calls) > 1:
            return batch(session, model, requests)
        claimed.set()
        assert release.wait(30)
        raise IntegrityError("INSERT INTO jobs", {}, Exception("lost to another job"))

    monkeypatch.setattr(lifecycle, "batch", first_pauses_then_fails)
    results: dict[str, str | None] = {}

    def dispatcher(name: str) -> threading.Thread:
        def run() -> None:
            results[name] = dispatch.dispatch_model(ready_model["id"])

        return threading.Thread(target=run)

    first, second = dispatcher("first"), dispatcher("second")
    first.start()
    assert claimed.wait(30)
    second.start()
    second.join(timeout=1.0)
    waited = second.is_alive()  # behind the first, on the model row
    release.set()
    first.join(30)
    second.join(30)
    assert waited
    assert calls == [40, 40]
    assert results["first"] is None and results["second"] is not None
    with session_scope() as session:
        job = session.get(Job, results["second"])
        assert len(job.request_ids) == 40
        assert set(session.scalars(select(DeletionRequest.status))) == {"batched"}


def test_racing_dispatchers_with_sequential_batches(client, admin, ready_model):
    """Requests arriving while dispatchers race land in at most one job each."""
    _pending(client, admin, ready_model, 10)
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    _race(4, lambda: dispatch.dispatch_model(ready_model["id"]))
    with session_scope() as session:
        first = session.scalar(select(Job).where(Job.kind == JobKind.UNLEARN))
        first.status = JobStatus.SUCCEEDED  # as if it had finished
    _pending_more = train_keys(client, admin, ready_model["dataset_id"], 20)[10:]
    for key in _pending_more:
        client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": ready_model["id"], "subject_id": "late", "sample_keys": [key]},
        )
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    _race(4, lambda: dispatch.dispatch_model(ready_model["id"]))
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.kind == JobKind.UNLEARN)).all()
    claimed = [r for job in jobs for r in job.request_ids]
    assert len(jobs) == 2 and len(claimed) == len(set(claimed)) == 20


def test_one_live_lineage_job_per_model_is_a_database_rule(ready_model, env):
    with session_scope() as session:
        session.add(
            Job(
                tenant_id=_tenant(ready_model),
                model_id=ready_model["id"],
                kind=JobKind.UNLEARN,
                status=JobStatus.RUNNING,
            )
        )
    with pytest.raises(IntegrityError), session_scope() as session:
        session.add(
            Job(
                tenant_id=_tenant(ready_model),
                model_id=ready_model["id"],
                kind=JobKind.UNLEARN,
                status=JobStatus.QUEUED,
            )
        )
    with session_scope() as session:  # audits do not write the lineage: allowed beside it
        session.add(
            Job(
                tenant_id=_tenant(ready_model),
                model_id=ready_model["id"],
                kind=JobKind.AUDIT,
                status=JobStatus.QUEUED,
            )
        )


def _tenant(model) -> str:
    from service.tables import Model

    with session_scope() as session:
        return session.get(Model, model["id"]).tenant_id


def test_a_job_is_claimed_by_one_worker(client, admin, ready_model):
    _pending(client, admin, ready_model, 2)
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    job_id = dispatch.dispatch_model(ready_model["id"])
    claims = [c for c in _race(5, lambda: lease.claim(job_id)) if c is not None]
    assert len(claims) == 1 and claims[0].number == 1


def test_sweeper_requeues_then_fails_past_the_cap(client, admin, ready_model, monkeypatch):
    monkeypatch.setenv("UNLEARN_JOB_MAX_ATTEMPTS", "2")
    from service.settings import get_settings

    get_settings.cache_clear()
    _pending(client, admin, ready_model, 2)
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    job_id = dispatch.dispatch_model(ready_model["id"])

    def expire() -> None:
        with session_scope() as session:
            session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)

    first = lease.claim(job_id)
    expire()
    assert dispatch.sweep()["requeued"] == 1
    with session_scope() as session:
        assert session.get(Job, job_id).status == "queued"
        assert {r.status for r in session.scalars(select(DeletionRequest))} == {"batched"}
    # The first attempt's late writes are fenced off.
    with pytest.raises(lease.LeaseLost), session_scope() as session:
        lease.lock_owned_job(session, first)
    lease.claim(job_id)
    expire()
    assert dispatch.sweep()["failed"] == 1
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and "lease expired" in job.error
        requests = session.scalars(select(DeletionRequest)).all()
        assert {r.status for r in requests} == {"failed"}
        assert all("failed after 2 attempts" in r.error for r in requests)
        assert session.scalar(select(func.count()).select_from(Job)) == 2  # train + this one


def test_failed_job_requeues_then_fails(client, admin, ready_model, monkeypatch):
    monkeypatch.setenv("UNLEARN_JOB_MAX_ATTEMPTS", "2")
    from service.settings import get_settings

    get_settings.cache_clear()
    _pending(client, admin, ready_model, 1)
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    job_id = dispatch.dispatch_model(ready_model["id"])

    def broken(claim, heartbeat):
        raise RuntimeError("GPU fell off the bus")

    monkeypatch.setitem(RUNNERS, JobKind.UNLEARN, broken)
    run_job(job_id)
    with session_scope() as session:
        assert session.get(Job, job_id).status == "queued"
    run_job(job_id)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and "GPU fell off the bus" in job.error
    request = client.get("/v1/deletion-requests", headers=admin).json()["items"][0]
    assert request["status"] == "failed" and "GPU fell off the bus" in request["error"]
    assert client.get(f"/v1/models/{ready_model['id']}", headers=admin).json()["head_version"] == 1
