"""Webhook subscriptions and their events: CRUD under /v1/webhooks scoped to the tenant,
``model.version_published`` and ``audit.completed`` fanned out through the deliveries of
callbacks and verified as a receiver would (``standardwebhooks``), redelivery, the retry
window, the attempts' outcomes in /metrics, the conversion of old secrets, and the
streamed weights download those events link to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text
from standardwebhooks import Webhook

from service.api.events import AuditCompleted, DeletionRequestStatusChanged, VersionPublished
from service.artifacts import ArtifactStore
from service.callbacks import service as callbacks
from tests.helpers.app import configure, create_model, forget_now, train_keys
from tests.helpers.callbacks import Receiver, deliver_sent


@pytest.fixture
def receivers(env, monkeypatch) -> Iterator[list[Receiver]]:
    configure(monkeypatch, callback_allowed_networks="127.0.0.0/8", callback_retry_seconds=0.2)
    made = [Receiver() for _ in range(3)]
    yield made
    for receiver in made:
        receiver.close()


def _subscribe(client, headers, url, events, model_id=None) -> dict:
    body = {"url": url, "events": events, "model_id": model_id}
    response = client.post("/v1/webhooks", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_subscriptions_are_managed_by_scope_and_tenant(client, admin, key_for, ready_model):
    writer, reader = key_for(["webhooks:write"]), key_for(["webhooks:read"])
    stranger = key_for(["admin"], tenant="other")
    body = {"url": "https://hooks.example.com/x", "events": ["model.version_published"]}
    assert client.post("/v1/webhooks", headers=reader, json=body).status_code == 403
    assert client.get("/v1/webhooks", headers=key_for(["models:read"])).status_code == 403
    made = _subscribe(client, writer, body["url"], ["model.version_published"], ready_model["id"])
    assert made["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(made["secret"][6:])) <= 32
    assert made["model_id"] == ready_model["id"]

    refused = [
        {**body, "url": "http://169.254.169.254/latest"},  # SSRF, as callback_url
        {**body, "url": "http://localhost:8080/x"},
        {**body, "events": ["model.deleted"]},
        {**body, "events": []},
        {**body, "events": ["audit.completed", "audit.completed"]},
        {**body, "secret": "whsec_mine"},
    ]
    for bad in refused:
        response = client.post("/v1/webhooks", headers=writer, json=bad)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
    other_model = {**body, "model_id": "no-such-model"}
    assert client.post("/v1/webhooks", headers=writer, json=other_model).status_code == 404
    theirs = {**body, "model_id": ready_model["id"]}
    assert client.post("/v1/webhooks", headers=stranger, json=theirs).status_code == 404

    listed = client.get("/v1/webhooks", headers=reader).json()
    assert [w["id"] for w in listed["items"]] == [made["id"]]
    assert "secret" not in listed["items"][0]
    assert client.get("/v1/webhooks", headers=stranger).json()["items"] == []
    path = f"/v1/webhooks/{made['id']}"
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"description": "x"}} if method == "patch" else {}
        assert getattr(client, method)(path, headers=stranger, **kwargs).status_code == 404
    for sub in ("/secret", "/deliveries"):
        assert client.get(path + sub, headers=stranger).status_code == 404
    assert client.post(path + "/secret/rotate", headers=stranger).status_code == 404

    changed = client.patch(
        path, headers=writer, json={"events": ["audit.completed"], "model_id": None}
    )
    assert changed.status_code == 200
    assert changed.json()["events"] == ["audit.completed"] and changed.json()["model_id"] is None
    assert client.patch(path, headers=writer, json={"url": "http://10.0.0.1/"}).status_code == 422
    assert client.get(path, headers=reader).json()["events"] == ["audit.completed"]

    assert client.get(path + "/secret", headers=reader).status_code == 403
    assert client.get(path + "/secret", headers=writer).json()["secret"] == made["secret"]
    rotated = client.post(path + "/secret/rotate", headers=writer).json()
    assert rotated["secret"] != made["secret"] and rotated["previous_valid_until"]

    assert client.delete(path, headers=writer).status_code == 204
    assert client.get(path, headers=reader).status_code == 404


def test_a_new_version_and_its_audit_are_announced_to_the_subscriptions_that_asked(
    client, admin, ready_model, receivers, sent_messages, monkeypatch
):
    everything, published, elsewhere = receivers
    configure(monkeypatch, public_url="https://unlearn.example.com/")
    model_id = ready_model["id"]
    other = create_model(client, admin, ready_model["dataset_id"])  # never trained here
    all_events = ["deletion_request.status_changed", "model.version_published", "audit.completed"]
    subs = [
        _subscribe(client, admin, everything.url, all_events, model_id),
        _subscribe(client, admin, published.url, ["model.version_published"]),
        _subscribe(client, admin, elsewhere.url, all_events, other["id"]),
    ]
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    request = forget_now(client, admin, model_id, keys)
    deliver_sent(sent_messages)

    for receiver, sub in zip(receivers, subs, strict=True):
        for headers, body in receiver.received:
            assert (
                Webhook(sub["secret"]).verify(body, headers)["delivery_id"]
                == (headers["webhook-id"])
            )
    assert elsewhere.received == []
    bodies = everything.bodies()
    documented = {  # the OpenAPI document's webhooks: what is sent validates, strictly
        "deletion_request.status_changed": DeletionRequestStatusChanged,
        "model.version_published": VersionPublished,
        "audit.completed": AuditCompleted,
    }
    for body in bodies:
        documented[body["event"]].model_validate_json(json.dumps(body))
    assert [b["event"] for b in bodies] == [
        "deletion_request.status_changed",  # batched
        "deletion_request.status_changed",  # unlearning
        "deletion_request.status_changed",  # auditing (the publishing transaction)
        "model.version_published",
        "audit.completed",
        "deletion_request.status_changed",  # completed
    ]
    statuses = [b["status"] for b in bodies if b["event"] == "deletion_request.status_changed"]
    assert statuses == ["batched", "unlearning", "auditing", "completed"]
    version = next(b for b in bodies if b["event"] == "model.version_published")
    assert version["model_id"] == model_id and version["version"] == 2 and version["parent"] == 1
    assert version["deletion_request_ids"] == [request["id"]] and version["kind"] == "unlearned"
    assert published.bodies() == [{**version, "delivery_id": published.bodies()[0]["delivery_id"]}]
    site = "https://unlearn.example.com"
    assert version["weights_url"] == f"{site}/v1/models/{model_id}/versions/2/weights"
    weights = client.get(version["weights_url"].removeprefix(site), headers=admin)
    assert weights.status_code == 200
    assert hashlib.sha256(weights.content).hexdigest() == version["weights_sha256"]
    audit = next(b for b in bodies if b["event"] == "audit.completed")
    report = client.get(f"/v1/models/{model_id}/versions/2/audit", headers=admin).json()
    assert audit["version"] == 2 and audit["verdict"] == report["verdict"]
    assert audit["audit_url"] == f"{site}/v1/models/{model_id}/versions/2/audit"

    listed = client.get(f"/v1/webhooks/{subs[0]['id']}/deliveries", headers=admin).json()
    assert len(listed["items"]) == 6 and listed["next_cursor"] is None
    assert [d["event"] for d in listed["items"]] == [b["event"] for b in reversed(bodies)]
    first = client.get(
        f"/v1/webhooks/{subs[0]['id']}/deliveries", headers=admin, params={"limit": 4}
    ).json()
    rest = client.get(
        f"/v1/webhooks/{subs[0]['id']}/deliveries",
        headers=admin,
        params={"limit": 4, "cursor": first["next_cursor"]},
    ).json()
    assert [d["id"] for d in first["items"] + rest["items"]] == [d["id"] for d in listed["items"]]
    assert all(d["status"] == "delivered" and d["subscription_id"] for d in listed["items"])
    # A request's own callback list stays the callback_url's (it has none).
    own = client.get(f"/v1/deletion-requests/{request['id']}/callbacks", headers=admin).json()
    assert own["items"] == []


def test_a_delivery_is_sent_again_on_request_with_the_same_body_and_id(
    client, admin, key_for, ready_model, receivers, sent_messages
):
    receiver = receivers[0]
    sub = _subscribe(client, admin, receiver.url, ["deletion_request.status_changed"])
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    request = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": ready_model["id"], "subject_id": "s", "sample_keys": keys},
    ).json()
    client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)
    assert len(receiver.received) == 1
    first_headers, first_body = receiver.received[0]
    delivery = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"][0]

    path = f"/v1/webhooks/deliveries/{delivery['id']}/redeliver"
    assert client.post(path, headers=key_for(["webhooks:read"])).status_code == 403
    assert client.post(path, headers=key_for(["admin"], tenant="other")).status_code == 404
    assert client.post("/v1/webhooks/deliveries/nope/redeliver", headers=admin).status_code == 404
    again = client.post(path, headers=key_for(["webhooks:write"]))
    assert again.status_code == 202
    assert again.json()["redelivery_of"] == delivery["id"] and again.json()["id"] != delivery["id"]
    assert again.json()["status"] == "pending"
    deliver_sent(sent_messages)
    headers, body = receiver.received[1]
    assert body == first_body and headers["webhook-id"] == first_headers["webhook-id"]
    Webhook(sub["secret"]).verify(body, headers)
    listed = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"]
    assert [d["status"] for d in listed] == ["delivered", "delivered"]


def test_a_moved_subscription_gets_its_pending_and_resent_deliveries_at_its_new_url(
    client, admin, ready_model, receivers, sent_messages
):
    old, new = receivers[0], receivers[1]
    sub = _subscribe(client, admin, old.url, ["deletion_request.status_changed"])
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    request = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": ready_model["id"], "subject_id": "s", "sample_keys": keys},
    ).json()
    client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)  # pending
    moved = client.patch(f"/v1/webhooks/{sub['id']}", headers=admin, json={"url": new.url})
    assert moved.status_code == 200, moved.text
    deliver_sent(sent_messages)
    assert old.received == [] and len(new.received) == 1
    (delivery,) = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"]
    client.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=admin)
    deliver_sent(sent_messages)
    assert old.received == [] and len(new.received) == 2


def test_a_request_callback_is_sent_again_signed_with_the_tenant_secret(
    client, admin, ready_model, receivers, sent_messages
):
    receiver = receivers[1]
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    request = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={
            "model_id": ready_model["id"],
            "subject_id": "s",
            "sample_keys": keys,
            "callback_url": receiver.url,
        },
    ).json()
    client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)
    path = f"/v1/deletion-requests/{request['id']}/callbacks"
    original = client.get(path, headers=admin).json()["items"][0]
    assert original["subscription_id"] is None and original["event_status"] == "cancelled"
    again = client.post(f"/v1/webhooks/deliveries/{original['id']}/redeliver", headers=admin)
    assert again.status_code == 202 and again.json()["request_id"] == request["id"]
    deliver_sent(sent_messages)
    secret = client.get("/v1/callback-secret", headers=admin).json()["secret"]
    (first_headers, first_body), (headers, body) = receiver.received
    assert body == first_body and headers["webhook-id"] == first_headers["webhook-id"]
    assert Webhook(secret).verify(body, headers)["status"] == "cancelled"
    assert [d["redelivery_of"] for d in client.get(path, headers=admin).json()["items"]] == [
        None,
        original["id"],
    ]


def test_the_retry_schedule_spans_three_days_with_exponential_backoff(env):
    times = callbacks.retry_delays()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 0 and times[-1] >= 3 * 86400
    assert gaps[:5] == [10, 20, 40, 80, 160]  # UNLEARN_CALLBACK_RETRY_SECONDS, doubled
    assert max(gaps) == 6 * 3600 and all(b >= a for a, b in zip(gaps[:-2], gaps[1:-1], strict=True))
    assert len(times) <= 40  # UNLEARN_CALLBACK_MAX_ATTEMPTS does not cut it short


def _count(outcome: str) -> float:
    sample = REGISTRY.get_sample_value("unlearn_callback_attempts_total", {"outcome": outcome})
    return sample or 0.0


def test_a_delivery_is_given_up_at_the_end_of_its_window_and_counted(
    client, admin, ready_model, receivers, sent_messages, monkeypatch
):
    import time

    configure(
        monkeypatch,
        callback_allowed_networks="127.0.0.0/8",
        callback_retry_seconds=0.2,
        callback_retry_hours=1.5 / 3600,  # a 1.5 s window
    )
    receiver = receivers[0]
    receiver.statuses = [500] * 100
    _subscribe(client, admin, receiver.url, ["deletion_request.status_changed"])
    before = {o: _count(o) for o in ("retrying", "gave_up", "delivered")}
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    request = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": ready_model["id"], "subject_id": "s", "sample_keys": keys},
    ).json()
    client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)
    deadline = time.monotonic() + 15
    while _pending(client, admin) and time.monotonic() < deadline:
        time.sleep(0.05)
        callbacks.resend_due()  # what beat's sweeper does
        deliver_sent(sent_messages)
    sub = client.get("/v1/webhooks", headers=admin).json()["items"][0]
    item = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"][0]
    assert item["status"] == "failed"
    attempts = item["attempts"]
    assert len(attempts) >= 3 and len(receiver.received) == len(attempts)
    created = datetime.fromisoformat(item["created_at"])
    last = datetime.fromisoformat(attempts[-1]["at"])
    assert timedelta(seconds=1.5) <= last - created < timedelta(seconds=4)
    assert _count("gave_up") - before["gave_up"] == 1
    assert _count("retrying") - before["retrying"] == len(attempts) - 1
    assert _count("delivered") == before["delivered"]
    scraped = client.get("/metrics").text
    assert 'unlearn_callback_attempts_total{outcome="gave_up"}' in scraped


def _pending(client, admin) -> bool:
    sub = client.get("/v1/webhooks", headers=admin).json()["items"][0]
    items = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"]
    return any(d["status"] == "pending" for d in items)


def test_the_weights_stream_with_their_sha256_as_etag_and_ranges(
    client, admin, key_for, ready_model, monkeypatch
):
    path = f"/v1/models/{ready_model['id']}/versions/1/weights"
    version = client.get(f"/v1/models/{ready_model['id']}/versions/1", headers=admin).json()
    sha256 = version["artifact_sha256"]

    def whole_file_read(*args, **kwargs):
        raise AssertionError("the download read the whole file into memory")

    monkeypatch.setattr(ArtifactStore, "get_bytes", whole_file_read)
    reader = key_for(["models:read"])
    full = client.get(path, headers=reader)
    assert full.status_code == 200
    assert hashlib.sha256(full.content).hexdigest() == sha256
    assert full.headers["etag"] == f'"{sha256}"'
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-length"] == str(len(full.content))
    assert "attachment" in full.headers["content-disposition"]

    cached = client.get(path, headers={**reader, "If-None-Match": f'"{sha256}"'})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == f'"{sha256}"'
    stale = client.get(path, headers={**reader, "If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == full.content

    part = client.get(path, headers={**reader, "Range": "bytes=8-107"})
    assert part.status_code == 206 and part.content == full.content[8:108]
    assert part.headers["content-range"] == f"bytes 8-107/{len(full.content)}"
    tail = client.get(path, headers={**reader, "Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == full.content[-16:]
    beyond = client.get(path, headers={**reader, "Range": f"bytes={len(full.content) + 10}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-type"] == "application/problem+json"
    assert beyond.headers["content-range"] == f"bytes */{len(full.content)}"
    for malformed in ("lines=0-9", "bytes=9-2", "bytes"):
        refused = client.get(path, headers={**reader, "Range": malformed})
        assert refused.status_code == 422, malformed
        assert refused.headers["content-type"] == "application/problem+json"

    assert client.get(path, headers=key_for(["requests:read"])).status_code == 403
    assert client.get(path, headers=key_for(["admin"], tenant="other")).status_code == 404


def test_old_secrets_keep_their_key_bytes_in_standard_form(sqlite_env, tmp_path):
    from alembic import command

    from service.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0008")
    legacy = "whsec_" + secrets.token_urlsafe(32)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tenants (id, name, created_at, callback_secret) "
                "VALUES ('t1', 'acme', '2026-01-01 00:00:00', :secret)"
            ),
            {"secret": legacy},
        )
    command.upgrade(alembic_config(url), "head")
    with engine.begin() as connection:
        converted = connection.execute(text("SELECT callback_secret FROM tenants")).scalar_one()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    expected = hmac.new(legacy.encode(), f"msg_1.{int(at.timestamp())}.{{}}".encode(), "sha256")
    signed = Webhook(converted).sign("msg_1", at, b"{}")
    assert signed == "v1," + base64.b64encode(expected.digest()).decode()
    command.downgrade(alembic_config(url), "0008")
    with engine.begin() as connection:
        restored = connection.execute(text("SELECT callback_secret FROM tenants")).scalar_one()
    assert restored == legacy
    engine.dispose()


def test_a_rotated_secret_signs_only_during_its_grace():
    from service.callbacks.signing import in_use

    now = datetime.now(UTC)
    assert in_use("new", "old", now + timedelta(hours=1)) == ["new", "old"]
    assert in_use("new", "old", now - timedelta(seconds=1)) == ["new"]
    assert in_use("new", None, None) == ["new"]
