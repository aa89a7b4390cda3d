"""The audit through the service: automatic after each unlearned version, on demand with
retrained references, the head gauges, and a request's certificate."""

from __future__ import annotations

import re

from service.jobs import dispatch
from tests.helpers.app import configure, run_queued_jobs, train_keys


def _forget(client, admin, model, keys):
    response = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model["id"], "subject_id": "subject-1", "sample_keys": keys},
    )
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    dispatch.dispatch_model(model["id"])
    run_queued_jobs(model["id"])
    return response.json()["id"]


def test_audit_certificate_and_gauges(client, admin, key_for, ready_model, monkeypatch):
    model_id = ready_model["id"]
    keys = train_keys(client, admin, ready_model["dataset_id"], 150)
    request_id = _forget(client, admin, ready_model, keys)
    base = f"/v1/models/{model_id}/versions"

    auditor = key_for(["audit:read"])
    audit = client.get(f"{base}/2/audit", headers=auditor)
    assert audit.status_code == 200, audit.text
    report = audit.json()
    assert report["version"] == 2 and report["forget_set_size"] == 150
    assert report["verdict"] == "no_reference" and report["reference"] is None
    # Without references: the parent (version 1) is the control, and the forget set's
    # membership signal is reported before and after, in plain words too.
    assert report["control"]["version"] == 1
    signal = report["membership_signal"]
    assert 0 <= signal["parent"]["auc"] <= 1 and 0 <= signal["version"]["auc"] <= 1
    assert report["evidence"].startswith("not verified against retrained models; ")
    assert 0 <= report["metrics"]["mia_auc"] <= 1 and 0 <= report["metrics"]["mia_efficacy"] <= 1
    assert report["roc"][0] == [0.0, 0.0] and report["roc"][-1] == [1.0, 1.0]
    assert sum(report["metrics"]["forget_entropy_histogram"]["counts"]) == 150
    assert client.get(f"{base}/1/audit", headers=auditor).status_code == 404
    assert client.get(f"{base}/2/audit", headers=key_for(["models:read"])).status_code == 403

    assert client.post(f"{base}/2/audit", headers=auditor, json={}).status_code == 403
    assert client.post(f"{base}/1/audit", headers=admin, json={}).status_code == 409
    assert (
        client.post(f"{base}/2/audit", headers=admin, json={"reference": "bogus"}).status_code
        == 422
    )
    queued = client.post(f"{base}/2/audit", headers=admin, json={"reference": "retrain"})
    assert queued.status_code == 202 and queued.json()["kind"] == "audit"
    run_queued_jobs(model_id)
    report = client.get(f"{base}/2/audit", headers=auditor).json()
    assert report["verdict"] in ("pass", "fail", "inconclusive") and 0 < report["frm"] <= 1
    assert report["control"]["version"] == 1 and report["control"]["verdict"] is not None
    assert report["evidence"].split(":")[0] in (
        "verified against 4 retrained models",
        "compared with 4 retrained models",
    )
    assert report["reference"]["versions"] == [3, 4, 5, 6]  # K = 4 by default
    assert report["speedup_vs_reference"] is not None
    assert all(gate["tolerance"] >= gate["floor"] for gate in report["gates"])
    references = [client.get(f"{base}/{n}", headers=admin).json() for n in (3, 4, 5, 6)]
    assert all(
        v["kind"] == "retrained" and not v["in_lineage"] and v["parent"] == 2 for v in references
    )
    assert client.get(f"/v1/models/{model_id}", headers=admin).json()["head_version"] == 2

    # Per-model series name model ids: only a scrape with the metrics token gets them.
    configure(monkeypatch, metrics_token="scrape-token-0123456789abcdef")
    scrape = {"Authorization": "Bearer scrape-token-0123456789abcdef"}
    metrics = client.get("/metrics", headers=scrape).text
    assert re.search(rf'unlearn_head_audit_frm{{model="{model_id}"}} [0-9.]+', metrics)
    assert f'unlearn_head_audit_mia_auc{{model="{model_id}"}}' in metrics

    certificate = client.get(f"/v1/deletion-requests/{request_id}/certificate", headers=admin)
    assert certificate.status_code == 200, certificate.text
    body = certificate.json()
    assert body["request"]["id"] == request_id and body["audit_log_entries_consistent"]
    assert len(body["sample_key_digests"]) == 150 and keys[0] not in certificate.text
    assert body["version_before"]["number"] == 1 and body["version_after"]["number"] == 2
    assert body["audit"]["verdict"] in ("pass", "fail", "inconclusive")
    assert body["evidence"] == body["audit"]["evidence"] == report["evidence"]
    actions = [entry["action"] for entry in body["audit_log"]]
    assert actions[0] == "deletion_request.received"
    assert {
        "deletion_request.completed",
        "model_version.published",
        "model_version.audited",
    } <= set(actions)
    assert all(e["prev_hash"] and e["hash"] for e in body["audit_log"])

    pending = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={
            "model_id": model_id,
            "subject_id": "s2",
            "sample_keys": train_keys(client, admin, ready_model["dataset_id"], 160)[150:],
        },
    ).json()
    assert (
        client.get(f"/v1/deletion-requests/{pending['id']}/certificate", headers=admin).status_code
        == 409
    )
    assert client.get("/v1/deletion-requests/nope/certificate", headers=admin).status_code == 404


def test_a_policy_can_hold_requests_until_a_reference_audit(client, admin, ready_model):
    """`complete_after: reference_audit`: an audit without references completes nothing and
    queues one against retrained models for the version, carrying the requests; they
    complete with it (here the policy changed after the version's audit was queued)."""
    from service.enums import JobKind
    from workers.commands import run_job

    model_id = ready_model["id"]
    keys = train_keys(client, admin, ready_model["dataset_id"], 20)
    request_id = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model_id, "subject_id": "s", "sample_keys": keys},
    ).json()["id"]
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    dispatch.dispatch_model(model_id)
    run_job(_queued_job(model_id, JobKind.UNLEARN))
    policy = {"complete_after": "reference_audit", "reference_seeds": 2}
    assert client.patch(f"/v1/models/{model_id}", headers=admin, json={"audit": policy}).is_success
    run_job(_queued_job(model_id, JobKind.AUDIT))  # queued before the change: no references
    request = client.get(f"/v1/deletion-requests/{request_id}", headers=admin).json()
    assert request["status"] == "auditing"
    base = f"/v1/models/{model_id}/versions/2/audit"
    assert client.get(base, headers=admin).json()["reference"] is None

    run_queued_jobs(model_id)  # the reference audit the first one queued
    request = client.get(f"/v1/deletion-requests/{request_id}", headers=admin).json()
    assert request["status"] == "completed"
    assert client.get(base, headers=admin).json()["reference"]["models"] == 2


def _queued_job(model_id: str, kind) -> str:
    from sqlalchemy import select

    from service.db import session_scope
    from service.tables import Job

    with session_scope() as session:
        job_id = session.scalar(
            select(Job.id).where(Job.model_id == model_id, Job.kind == kind, Job.status == "queued")
        )
    assert job_id is not None
    return job_id
