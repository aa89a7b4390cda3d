"""Callbacks: only public http(s) targets (unless a network is allowed), every status
change POSTed from a worker signed as Standard Webhooks define it (checked here with the
``standardwebhooks`` package, as a receiver would), retried with backoff, and every
attempt readable through the API."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook, WebhookVerificationError

from service.callbacks import signing, targets
from service.jobs import dispatch
from tests.helpers.app import configure, make_key, run_queued_jobs, train_keys
from tests.helpers.callbacks import Receiver, deliver_sent
from workers.commands import deliver_callback


@pytest.fixture
def receiver(env, monkeypatch) -> Iterator[Receiver]:
    configure(monkeypatch, callback_allowed_networks="127.0.0.0/8", callback_retry_seconds=0.01)
    server = Receiver()
    yield server
    server.close()


def _submit(client, headers, model, keys, url):
    return client.post(
        "/v1/deletion-requests",
        headers=headers,
        json={"model_id": model["id"], "subject_id": "s", "sample_keys": keys, "callback_url": url},
    )


# IPv6 addresses that carry an IPv4 address, each reaching one callbacks must not reach.
TRANSITION_FORMS_INSIDE = [
    "64:ff9b::a9fe:a9fe",  # NAT64 (well-known prefix) of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64, /96 layout, of 10.0.0.1
    "64:ff9b:1:a9fe:a9:fe00::",  # local-use NAT64, /48 layout, of 169.254.169.254
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:a9fe:a9fe",  # IPv4-mapped
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
]
# The same forms reaching public addresses, which callbacks may reach.
TRANSITION_FORMS_PUBLIC = [
    "64:ff9b::808:808",
    "64:ff9b:1::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
]


@pytest.mark.parametrize("address", TRANSITION_FORMS_INSIDE)
def test_ipv6_forms_of_a_refused_ipv4_address_are_refused(monkeypatch, address):
    configure(monkeypatch, callback_allowed_networks="")
    with pytest.raises(targets.RefusedTarget):
        targets.check_url(f"https://[{address}]/hook")

    def resolves(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolves)
    targets.check_url("https://hooks.example.com/hook")  # a name: judged at delivery
    with pytest.raises(targets.RefusedTarget):
        targets.resolve("https://hooks.example.com/hook")


@pytest.mark.parametrize("address", TRANSITION_FORMS_PUBLIC)
def test_ipv6_forms_of_a_public_ipv4_address_are_accepted(monkeypatch, address):
    configure(monkeypatch, callback_allowed_networks="")
    assert targets.check_url(f"https://[{address}]/hook")[1] == address

    def resolves(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolves)
    assert str(targets.resolve("https://hooks.example.com/hook").address) == address


def test_an_allowed_ipv4_network_allows_its_ipv6_forms_and_nothing_else(monkeypatch):
    configure(monkeypatch, callback_allowed_networks="10.0.0.0/8")
    targets.check_url("http://[64:ff9b::a00:1]/hook")
    targets.check_url("http://[2002:a00:1::]/hook")
    with pytest.raises(targets.RefusedTarget):
        targets.check_url("http://[64:ff9b::a9fe:a9fe]/hook")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://api.localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
        "http://[::127.0.0.1]/hook",  # IPv4-compatible
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "ftp://example.com/hook",
        "https://user:pass@example.com/hook",
        "file:///etc/passwd",
    ],
)
def test_callback_targets_inside_the_network_are_refused(client, admin, ready_model, url):
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    response = _submit(client, admin, ready_model, keys, url)
    assert response.status_code == 422, url
    assert client.get("/v1/deletion-requests", headers=admin).json()["items"] == []


def test_a_public_target_is_accepted_and_an_allowed_network_too(
    client, admin, ready_model, monkeypatch
):
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    assert (
        _submit(client, admin, ready_model, keys[:1], "https://hooks.example.com/x").status_code
        == 202
    )
    configure(monkeypatch, callback_allowed_networks="10.0.0.0/8")
    assert _submit(client, admin, ready_model, keys[1:], "http://10.1.2.3/hook").status_code == 202


def test_every_status_change_is_posted_signed(client, admin, ready_model, receiver, sent_messages):
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    request = _submit(client, admin, ready_model, keys, receiver.url).json()
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    dispatch.dispatch_model(ready_model["id"])
    run_queued_jobs(ready_model["id"])
    deliver_sent(sent_messages)
    bodies = receiver.bodies()
    assert [b["status"] for b in bodies] == ["batched", "unlearning", "auditing", "completed"]
    assert {b["request_id"] for b in bodies} == {request["id"]}
    assert bodies[-1]["result_version"] == 2 and "subject_id" not in bodies[-1]
    secret = client.get("/v1/callback-secret", headers=admin).json()["secret"]
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:])) <= 32
    for headers, body in receiver.received:
        assert Webhook(secret).verify(body, headers) == json.loads(body)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body[:-1] + b', "x": 1}', headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(signing.new_secret()).verify(body, headers)
        old = {**headers, "webhook-timestamp": str(int(time.time()) - 600)}
        with pytest.raises(WebhookVerificationError):  # a replay
            Webhook(secret).verify(body, old)
        assert headers["webhook-id"] == json.loads(body)["delivery_id"]
        assert headers["webhook-signature"].startswith("v1,")
        assert headers["X-Unlearn-Event"] == "deletion_request.status_changed"
        assert headers["Host"].startswith("127.0.0.1:")
    listed = client.get(f"/v1/deletion-requests/{request['id']}/callbacks", headers=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [d["event_status"] for d in items] == ["batched", "unlearning", "auditing", "completed"]
    assert all(d["status"] == "delivered" and len(d["attempts"]) == 1 for d in items)
    assert items[0]["attempts"][0]["response_status"] == 200
    stranger = make_key(["admin"], tenant="other")
    path = f"/v1/deletion-requests/{request['id']}/callbacks"
    assert client.get(path, headers=stranger).status_code == 404


def test_failed_attempts_are_retried_with_backoff_then_given_up(
    client, admin, ready_model, receiver, sent_messages, monkeypatch
):
    from service.callbacks import service as callbacks

    configure(
        monkeypatch,
        callback_allowed_networks="127.0.0.0/8",
        # The first retry falls 1.6-2.4 s after a failure (+-20% jitter): wide enough that
        # the "not due" call below never lands after it on a slow run (at 0.5 s it did).
        callback_retry_seconds=2.0,
        callback_max_attempts=3,
    )
    receiver.statuses = [500, 503, 200, 500, 500, 500]
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    first = _submit(client, admin, ready_model, keys[:1], receiver.url).json()
    client.post(f"/v1/deletion-requests/{first['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)  # attempt 1: 500
    deliver_callback(_delivery_ids(client, admin, first["id"])[0])  # not due: no attempt
    assert len(receiver.received) == 1
    _retry_until_settled(client, admin, first["id"], sent_messages)
    delivery = client.get(f"/v1/deletion-requests/{first['id']}/callbacks", headers=admin).json()
    attempts = delivery["items"][0]["attempts"]
    assert [a["response_status"] for a in attempts] == [500, 503, 200]
    assert delivery["items"][0]["status"] == "delivered"
    gaps = [b["at"] for b in attempts]
    assert gaps == sorted(gaps)

    second = _submit(client, admin, ready_model, keys[1:], receiver.url).json()
    client.post(f"/v1/deletion-requests/{second['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)
    _retry_until_settled(client, admin, second["id"], sent_messages)
    delivery = client.get(f"/v1/deletion-requests/{second['id']}/callbacks", headers=admin).json()
    assert delivery["items"][0]["status"] == "failed"
    assert len(delivery["items"][0]["attempts"]) == 3  # the cap
    assert callbacks.resend_due() == 0


def _retry_until_settled(client, admin, request_id, sent_messages, timeout=20.0) -> None:
    """What the sweeper does: re-send due deliveries until this one is no longer pending."""
    from service.callbacks import service as callbacks

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = client.get(f"/v1/deletion-requests/{request_id}/callbacks", headers=admin).json()
        if items["items"][0]["status"] != "pending":
            return
        time.sleep(0.1)
        callbacks.resend_due()
        deliver_sent(sent_messages)
    raise AssertionError("the delivery never settled")


def _delivery_ids(client, admin, request_id) -> list[str]:
    items = client.get(f"/v1/deletion-requests/{request_id}/callbacks", headers=admin).json()
    return [d["id"] for d in items["items"]]


@pytest.mark.parametrize("address", ["10.9.8.7", "64:ff9b::a9fe:a9fe", "2002:7f00:1::"])
def test_a_name_that_resolves_inside_the_network_is_refused_at_delivery(
    client, admin, ready_model, sent_messages, monkeypatch, address
):
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    request = _submit(client, admin, ready_model, keys, "https://rebind.example.com/hook").json()

    def resolves_privately(host, port, *args, **kwargs):
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolves_privately)
    client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)
    delivery = client.get(f"/v1/deletion-requests/{request['id']}/callbacks", headers=admin).json()
    item = delivery["items"][0]
    assert item["status"] == "failed" and len(item["attempts"]) == 1
    assert "refused target" in item["attempts"][0]["error"]
    assert item["attempts"][0]["response_status"] is None


def test_a_delivery_logs_no_callback_url(client, admin, ready_model, receiver, sent_messages):
    import logging
    import uuid

    from service import logs

    logs.configure()  # what every unlearnd process runs
    records: list[logging.LogRecord] = []

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Kept()
    logging.getLogger().addHandler(handler)
    try:
        token = f"token-{uuid.uuid4().hex}"
        keys = train_keys(client, admin, ready_model["dataset_id"], 1)
        url = f"{receiver.url}&token={token}"
        request = _submit(client, admin, ready_model, keys, url).json()
        client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)
        deliver_sent(sent_messages)
    finally:
        logging.getLogger().removeHandler(handler)
    assert len(receiver.received) == 1
    assert any(r.getMessage() == "callback attempt" for r in records)  # INFO is kept
    leaked = [r.getMessage() for r in records if token in r.getMessage() or token in str(r.args)]
    assert leaked == []


def test_a_rotated_secret_signs_alongside_the_old_one(
    client, admin, ready_model, receiver, sent_messages
):
    old = client.get("/v1/callback-secret", headers=admin).json()["secret"]
    rotated = client.post("/v1/callback-secret/rotate", headers=admin).json()
    assert rotated["secret"] != old and rotated["previous_valid_until"]
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    request = _submit(client, admin, ready_model, keys, receiver.url).json()
    client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=admin)
    deliver_sent(sent_messages)
    headers, body = receiver.received[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(rotated["secret"]).verify(body, headers)
    for one in headers["webhook-signature"].split(" "):  # each secret signs on its own
        alone = {**headers, "webhook-signature": one}
        verified = 0
        for secret in (old, rotated["secret"]):
            try:
                Webhook(secret).verify(body, alone)
                verified += 1
            except WebhookVerificationError:
                pass
        assert verified == 1
    assert client.get("/v1/callback-secret", headers=make_key(["requests:read"])).status_code == 403


def test_the_embedded_runner_delivers_callbacks(sqlite_env, monkeypatch):
    configure(
        monkeypatch,
        dispatch_interval_seconds=0.3,
        sweep_interval_seconds=0.3,
        callback_allowed_networks="127.0.0.0/8",
    )
    from tests.helpers.app import create_dataset, create_model
    from tests.helpers.processes import wait_for
    from workers.runtime import create_app

    server = Receiver()
    headers = make_key(["admin"])
    try:
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            dataset = create_dataset(client, headers)
            model = create_model(client, headers, dataset["id"])
            url = f"/v1/models/{model['id']}"
            wait_for(lambda: client.get(url, headers=headers).json()["head_version"], 120, "v1")
            keys = train_keys(client, headers, dataset["id"], 1)
            request = _submit(client, headers, model, keys, server.url).json()
            client.post(f"{url}/flush", headers=headers)
            wait_for(
                lambda: [b["status"] for b in server.bodies()][-1:] == ["completed"],
                120,
                "the completed callback",
            )
    finally:
        server.close()
    assert [b["status"] for b in server.bodies()] == [
        "batched",
        "unlearning",
        "auditing",
        "completed",
    ]
    assert {b["request_id"] for b in server.bodies()} == {request["id"]}
