"""What the person accountable for erasure reads: the request register as CSV (streamed
page by page, subjects as digests, each completed request's evidence), this tenant's
audit-log entries, and a verification of the whole chain that names where it breaks."""

from __future__ import annotations

import csv
import io

from sqlalchemy import text

from service.audit_signing import generate
from service.audits import service as audits_service
from service.db import session_scope
from service.deletion_requests import register
from service.jobs import dispatch
from tests.helpers.app import configure, forget_now, make_key, run_queued_jobs, train_keys


def _register(client, headers, **params) -> list[dict[str, str]]:
    answer = client.get("/v1/deletion-requests:export", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert "deletion-register.csv" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert int(answer.headers["x-register-rows"]) == len(rows)
    return rows


def test_the_register_lists_every_request_with_its_evidence(
    client, admin, ready_model, monkeypatch
):
    monkeypatch.setattr(register, "PAGE", 2)  # several pages, streamed one after another
    model_id = ready_model["id"]
    keys = train_keys(client, admin, ready_model["dataset_id"], 4)
    forgotten = forget_now(client, admin, model_id, keys[:1])
    again = client.post(  # every key forgotten already: completed at once, no new version
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model_id, "subject_id": "user-8812", "sample_keys": keys[:1]},
    ).json()
    pending = [
        client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": model_id, "subject_id": f"user-{n}", "sample_keys": [key]},
        ).json()
        for n, key in enumerate(keys[1:])
    ]

    rows = _register(client, admin)
    assert list(rows[0]) == list(register.COLUMNS)
    assert [row["request_id"] for row in rows] == [
        forgotten["id"],
        again["id"],
        *[request["id"] for request in pending],
    ]  # oldest first, across pages
    by_id = {row["request_id"]: row for row in rows}
    done = by_id[forgotten["id"]]
    assert done["status"] == "completed" and done["met_deadline"] == "yes"
    assert done["result_version"] == "2" and done["completed_at"]
    verdict = client.get(f"/v1/models/{model_id}/versions/2/audit", headers=admin).json()
    assert done["evidence"] == verdict["verdict"]
    assert by_id[again["id"]]["evidence"] == "already_forgotten"
    assert by_id[again["id"]]["subject_digest"] == again["subject_digest"]
    assert all(by_id[r["id"]]["evidence"] == "" for r in pending)
    assert "user-8812" not in client.get("/v1/deletion-requests:export", headers=admin).text

    assert [r["request_id"] for r in _register(client, admin, status="pending")] == [
        r["id"] for r in pending
    ]
    assert _register(client, admin, model_id="nope") == []
    assert [r["request_id"] for r in _register(client, admin, subject_id="user-8812")] == [
        again["id"]
    ]
    # A filter the register cannot take is refused before a byte of CSV is sent.
    bad = client.get("/v1/deletion-requests:export", headers=admin, params={"model_id": "x" * 65})
    assert bad.status_code == 422 and "text/csv" not in bad.headers["content-type"]
    nul = client.get("/v1/deletion-requests:export", headers=admin, params={"model_id": "\x00"})
    assert nul.status_code == 422 and "text/csv" not in nul.headers["content-type"]
    reader = make_key(["models:read"])
    assert client.get("/v1/deletion-requests:export", headers=reader).status_code == 403
    other = make_key(["admin"], tenant="globex")
    assert _register(client, other) == []


def test_a_version_without_an_audit_is_not_audited_in_the_register(client, admin, ready_model):
    forgotten = forget_now(
        client, admin, ready_model["id"], train_keys(client, admin, ready_model["dataset_id"], 1)
    )
    with session_scope() as session:
        session.execute(text("DELETE FROM audits"))
    rows = _register(client, admin)
    assert [(r["request_id"], r["evidence"]) for r in rows] == [(forgotten["id"], "not_audited")]


def test_the_audit_log_lists_this_tenants_entries_and_its_verification_names_a_break(
    client, admin, ready_model, monkeypatch
):
    configure(monkeypatch, audit_signing_key=generate()[0])
    for key in train_keys(client, admin, ready_model["dataset_id"], 2):
        client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": ready_model["id"], "subject_id": "s", "sample_keys": [key]},
        )
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    dispatch.dispatch_model(ready_model["id"])
    run_queued_jobs(ready_model["id"])
    other = make_key(["admin"], tenant="globex")
    created = client.post("/v1/keys", headers=other, json={"scopes": ["models:read"]})
    assert created.status_code == 201, created.text  # globex's entry: not listed to acme

    auditor = make_key(["audit:read"])
    page = client.get("/v1/audit-log", headers=auditor, params={"limit": 3}).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    ids = [entry["id"] for entry in page["items"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    everything, cursor = [], None
    while True:
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        answer = client.get("/v1/audit-log", headers=auditor, params=params).json()
        everything += answer["items"]
        cursor = answer["next_cursor"]
        if not cursor:
            break
    mine = {entry["tenant_id"] for entry in everything}
    assert len(mine) == 1 and None not in mine  # this tenant's only
    assert any(e["action"] == "deletion_request.received" for e in everything)

    monkeypatch.setattr(audits_service, "VERIFY_EVERY_SECONDS", 0.0)  # walk on every call
    assert client.get("/v1/audit-log/verification", headers=auditor).status_code == 403
    intact = client.get("/v1/audit-log/verification", headers=admin).json()
    assert intact["intact"] is True and intact["broken"] is None
    assert intact["signatures_checked"] is True and intact["entries"] == len(everything)
    assert intact["head"]["entry_id"] == max(e["id"] for e in everything)
    with session_scope() as session:
        theirs = session.execute(
            text("SELECT max(id) FROM audit_log WHERE tenant_id <> :mine"), {"mine": mine.pop()}
        ).scalar_one()
    assert theirs is not None  # globex's entries exist, and were neither listed nor counted

    # A break at another tenant's entry is reported, without saying which or why.
    with session_scope() as session:
        action = session.execute(
            text("SELECT action FROM audit_log WHERE id = :id"), {"id": theirs}
        ).scalar_one()
        session.execute(
            text("UPDATE audit_log SET action = 'key.forged' WHERE id = :id"), {"id": theirs}
        )
    elsewhere = client.get("/v1/audit-log/verification", headers=admin).json()
    assert elsewhere["intact"] is False and elsewhere["broken"]["entry_id"] is None
    assert "another tenant" in elsewhere["broken"]["reason"]
    with session_scope() as session:
        session.execute(
            text("UPDATE audit_log SET action = :action WHERE id = :id"),
            {"action": action, "id": theirs},
        )  # restored: the break below is this tenant's own

    victim = next(e["id"] for e in everything if e["action"] == "deletion_request.received")
    with session_scope() as session:
        session.execute(
            text("UPDATE audit_log SET action = 'deletion_request.forged' WHERE id = :id"),
            {"id": victim},
        )
    broken = client.get("/v1/audit-log/verification", headers=admin).json()
    assert broken["intact"] is False
    assert broken["broken"]["entry_id"] == victim
    assert "altered" in broken["broken"]["reason"]
