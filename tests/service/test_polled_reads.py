"""The reads a dashboard polls: an ETag on every answer, 304 on an unchanged poll (before
the body is built), 200 with a new ETag after any change the body shows; and the overview
in one query."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, select, update

from service import changes
from service.changes import Topic
from service.db import get_engine, session_scope
from service.tables import DeletionRequest, Job, ModelVersion, Tenant
from tests.helpers.app import make_key, run_queued_jobs, train_keys


class Poller:
    """Polls URLs the way a dashboard does, remembering each answer's ETag."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers
        self.tags: dict[str, str] = {}
        self.bodies: dict[str, dict] = {}

    def poll(self, url: str):  # type: ignore[no-untyped-def]
        known = {"If-None-Match": self.tags[url]} if url in self.tags else {}
        return self.client.get(url, headers={**self.headers, **known})

    def watch(self, *urls: str) -> None:
        for url in urls:
            response = self.poll(url)
            assert response.status_code == 200, (url, response.text)
            assert response.headers["ETag"].startswith('W/"'), url
            self.tags[url], self.bodies[url] = response.headers["ETag"], response.json()

    def unchanged(self, *urls: str) -> None:
        for url in urls:
            response = self.poll(url)
            assert response.status_code == 304, (url, response.status_code, response.text)
            assert response.content == b"" and response.headers["ETag"] == self.tags[url]

    def changed(self, *urls: str) -> None:
        """Each URL answers 200 with a new ETag and a body that differs from the last one."""
        for url in urls:
            response = self.poll(url)
            assert response.status_code == 200, (url, response.status_code)
            assert response.headers["ETag"] != self.tags[url], url
            assert response.json() != self.bodies[url], url
            self.tags[url], self.bodies[url] = response.headers["ETag"], response.json()


def _file(client, headers, model, keys):  # type: ignore[no-untyped-def]
    body = {"model_id": model["id"], "subject_id": "user-1", "sample_keys": keys}
    response = client.post("/v1/deletion-requests", headers=headers, json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_304_until_a_change_the_body_shows(client, admin, ready_model):
    from service.jobs import dispatch
    from service.jobs.lease import claim, release
    from workers.heartbeat import Heartbeat

    model_id = ready_model["id"]
    model, models, versions = (
        f"/v1/models/{model_id}",
        "/v1/models",
        f"/v1/models/{model_id}/versions",
    )
    requests, jobs, overview = "/v1/deletion-requests", "/v1/jobs", "/v1/overview"
    poller = Poller(client, admin)
    poller.watch(model, models, versions, f"{versions}/1", requests, jobs, overview)
    poller.unchanged(model, models, versions, f"{versions}/1", requests, jobs, overview)

    patched = client.patch(model, headers=admin, json={"batching": {"max_requests": 7}})
    assert patched.status_code == 200
    poller.changed(model, models)
    poller.unchanged(versions, f"{versions}/1", requests, jobs)

    keys = train_keys(client, admin, ready_model["dataset_id"], 3)
    request = f"/v1/deletion-requests/{_file(client, admin, ready_model, keys[:1])}"
    poller.changed(requests, model, models, overview)  # pending_requests, the counts
    poller.watch(request)
    poller.unchanged(request, versions, jobs)

    assert client.post(f"{request}/cancel", headers=admin).status_code == 200
    poller.changed(request, requests, model, overview)
    assert poller.bodies[request]["status"] == "cancelled"

    _file(client, admin, ready_model, keys[1:])
    client.post(f"{model}/flush", headers=admin)
    job_id = dispatch.dispatch_model(model_id)
    assert job_id is not None
    poller.changed(jobs, requests, overview)
    job = f"/v1/jobs/{job_id}"
    poller.watch(job)

    attempt = claim(job_id)
    assert attempt is not None
    poller.changed(job, jobs, requests)  # the batch's requests are unlearning now
    assert poller.bodies[job]["status"] == "running"
    poller.unchanged(versions)

    # The heartbeat writes progress with a bulk UPDATE, not through a loaded row.
    heartbeat = Heartbeat(attempt)
    heartbeat.report("unlearning", 3, 10)
    heartbeat.renew(30)
    poller.changed(job, jobs)
    assert poller.bodies[job]["progress"] == {"stage": "unlearning", "step": 3, "total": 10}
    poller.unchanged(requests, versions)

    release(attempt, "the test lets it run again")
    run_queued_jobs(model_id)  # unlearns into version 2, then audits it
    poller.changed(versions, job, model, requests)
    assert poller.bodies[versions]["items"][0]["number"] == 2
    audit = f"{versions}/2/audit"
    poller.watch(audit, f"{versions}/1")

    again = client.post(audit, headers=admin, json={"reference": "none"})
    assert again.status_code == 202
    poller.changed(jobs)
    poller.unchanged(audit, f"{versions}/1", requests)  # queued: nothing stored yet
    run_queued_jobs(model_id)
    poller.changed(audit, jobs)


def test_a_304_builds_no_body(client, admin, ready_model, monkeypatch):
    from service.models import service as models
    from service.overview import service as overview

    urls = ["/v1/models", f"/v1/models/{ready_model['id']}", "/v1/overview"]
    poller = Poller(client, admin)
    poller.watch(*urls)

    def must_not_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the body was built for a 304")

    for name in ["list_page", "get_or_raise", "pending_counts", "to_read"]:
        monkeypatch.setattr(models, name, must_not_run)
    monkeypatch.setattr(overview, "overview", must_not_run)
    poller.unchanged(*urls)


def test_conditions_come_after_auth_and_tags_differ_by_tenant_and_target(
    client, admin, key_for, ready_model
):
    url = f"/v1/models/{ready_model['id']}"
    tag = client.get(url, headers=admin).headers["ETag"]
    assert client.get(url, headers={"If-None-Match": tag}).status_code == 401
    no_scope = key_for(["requests:read"])
    refused = client.get(url, headers={**no_scope, "If-None-Match": tag})
    assert refused.status_code == 403 and "ETag" not in refused.headers
    other_tenant = key_for(["models:read"], tenant="globex")
    assert client.get(url, headers={**other_tenant, "If-None-Match": tag}).status_code == 404
    # Another key of the same tenant shares the tag (the same data, the same body).
    same_tenant = key_for(["models:read"])
    assert client.get(url, headers={**same_tenant, "If-None-Match": tag}).status_code == 304

    listed = client.get("/v1/models", headers=admin).headers["ETag"]
    paged = client.get("/v1/models?limit=1", headers=admin).headers["ETag"]
    assert len({tag, listed, paged}) == 3
    # A list of tags, strong or weak, matches; garbage and "*" are answered in full.
    for header, status in [
        (f'"nope", {tag}', 304),
        (tag.removeprefix("W/"), 304),
        ("*", 200),
        ("garbage, ,,", 200),
        ("x" * 5000, 200),
    ]:
        assert client.get(url, headers={**admin, "If-None-Match": header}).status_code == status


def _tenant_id(name: str) -> str:
    with session_scope() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
    assert tenant_id is not None
    return tenant_id


def _stamps(tenant_id: str) -> tuple[int, ...]:
    with session_scope() as session:
        return changes.read(session, tenant_id=tenant_id, topics=list(Topic))


def test_stamps_advance_once_per_commit_and_never_on_rollback(client, admin, ready_model):
    tenant_id = _tenant_id("acme")
    before = dict(zip(Topic, _stamps(tenant_id), strict=True))

    with session_scope() as session:
        for job in session.scalars(select(Job).where(Job.model_id == ready_model["id"])):
            job.error = "noted"
            job.progress = {"stage": "test"}
    after = dict(zip(Topic, _stamps(tenant_id), strict=True))
    assert after == {**before, Topic.JOBS: before[Topic.JOBS] + 1}

    with pytest.raises(RuntimeError), session_scope() as session:
        session.execute(update(Job).values(error="rolled back"))
        raise RuntimeError
    assert dict(zip(Topic, _stamps(tenant_id), strict=True)) == after

    with session_scope() as session:  # a read leaves the stamps alone
        session.scalar(select(Job).limit(1))
    assert dict(zip(Topic, _stamps(tenant_id), strict=True)) == after

    now = datetime.now(UTC)
    row = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "model_id": ready_model["id"],
        "subject_digest": "0" * 64,
        "sample_count": 1,
        "status": "pending",
        "created_at": now,
        "updated_at": now,
        "due_at": now,
    }
    with session_scope() as session:  # bulk inserts name their tenant in each row
        session.execute(insert(DeletionRequest), [row])
    stamps = dict(zip(Topic, _stamps(tenant_id), strict=True))
    assert stamps == {**after, Topic.REQUESTS: after[Topic.REQUESTS] + 1}
    with pytest.raises(TypeError, match="cannot name its tenant"), session_scope() as session:
        session.execute(update(ModelVersion).values(metrics={}))


def test_stamps_on_the_embedded_default(sqlite_env):
    from service.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        headers = make_key(["admin"], tenant="solo")
        first = client.get("/v1/jobs", headers=headers)
        tag = first.headers["ETag"]
        assert client.get("/v1/jobs", headers={**headers, "If-None-Match": tag}).status_code == 304
        tenant_id = _tenant_id("solo")
        with session_scope() as session:
            changes.touch(session, tenant_id, Topic.JOBS)
        assert client.get("/v1/jobs", headers={**headers, "If-None-Match": tag}).status_code == 200
        assert _stamps(tenant_id)[list(Topic).index(Topic.JOBS)] == 1


def test_overview_counts_in_one_query(client, admin, key_for, ready_model):
    from service.overview import service as overview

    keys = train_keys(client, admin, ready_model["dataset_id"], 4)
    ids = [_file(client, admin, ready_model, [key]) for key in keys]
    client.post(f"/v1/deletion-requests/{ids[0]}/cancel", headers=admin)
    empty = key_for(["models:read"], tenant="globex")
    assert client.get("/v1/overview", headers=empty).json()["pending_by_model"] == []

    tenant_id = _tenant_id("acme")
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(get_engine(), "before_cursor_execute", listener)
    try:
        with session_scope() as session:
            summary = overview.overview(session, tenant_id=tenant_id)
    finally:
        event.remove(get_engine(), "before_cursor_execute", listener)
    assert len(statements) == 1

    body = client.get("/v1/overview", headers=key_for(["models:read"])).json()
    assert body == summary.model_dump(mode="json") | {
        "as_of": body["as_of"],
        "oldest_pending_age_seconds": body["oldest_pending_age_seconds"],
    }
    assert body["requests"] == {
        "pending": 3,
        "batched": 0,
        "unlearning": 0,
        "auditing": 0,
        "completed": 0,
        "cancelled": 1,
        "failed": 0,
    }
    created = [client.get(f"/v1/deletion-requests/{i}", headers=admin).json() for i in ids]
    assert body["oldest_pending_at"] == created[1]["created_at"]
    assert body["nearest_due_at"] == created[1]["due_at"]
    assert body["oldest_pending_age_seconds"] >= 0
    as_of = datetime.fromisoformat(body["as_of"])
    age = as_of - datetime.fromisoformat(body["oldest_pending_at"])
    assert abs(age - timedelta(seconds=body["oldest_pending_age_seconds"])) < timedelta(seconds=1)
    assert body["pending_by_model"] == [
        {
            "model_id": ready_model["id"],
            "name": ready_model["name"],
            "pending": 3,
            "oldest_pending_at": created[1]["created_at"],
            "nearest_due_at": created[1]["due_at"],
        }
    ]
    assert body["jobs"]["succeeded"] == 1 and body["jobs"]["running"] == 0
    assert client.get("/v1/overview", headers=key_for(["requests:read"])).status_code == 403


POLLED = {
    "/v1/models",
    "/v1/models/{model_id}",
    "/v1/models/{model_id}/versions",
    "/v1/models/{model_id}/versions/{number}",
    "/v1/models/{model_id}/versions/{number}/audit",
    "/v1/deletion-requests",
    "/v1/deletion-requests/{request_id}",
    "/v1/jobs",
    "/v1/jobs/{job_id}",
    "/v1/overview",
}


def test_the_openapi_document_says_which_reads_answer_304(client):
    paths = client.get("/openapi.json").json()["paths"]
    conditional = set()
    for path, operations in paths.items():
        read = operations.get("get")
        if read is None:
            continue
        headers = {p["name"] for p in read.get("parameters", []) if p["in"] == "header"}
        if "304" in read["responses"]:
            assert "if-none-match" in headers, path
            assert "ETag" in read["responses"]["304"]["headers"], path
            assert "ETag" in read["responses"]["200"]["headers"], path
            conditional.add(path)
        else:
            assert "if-none-match" not in headers, path
    # The weights answer 304 too, by their sha256 (a strong tag; test_webhooks checks it).
    assert conditional == POLLED | {"/v1/models/{model_id}/versions/{number}/weights"}
