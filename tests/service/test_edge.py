"""The edge in front of every route: authentication before any body is read, a streamed
body limit, rate limits, request ids and an access log without personal data."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers.app import configure, make_key
from tests.helpers.live import LiveServer

PROBLEM = "application/problem+json"


@pytest.fixture
def live(env) -> Iterator[LiveServer]:
    with LiveServer() as server:
        yield server


MB = 1024 * 1024


def test_a_chunked_body_without_a_key_is_refused_before_it_is_read(live):
    head = "POST /v1/deletion-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    status, sent = live.stream(head, 200 * MB)
    assert status == 401
    assert sent < 20 * MB, f"{sent} bytes went in before the 401"


def test_a_chunked_body_over_the_limit_is_413_as_soon_as_it_passes(live, admin):
    head = (
        "POST /v1/deletion-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {admin['Authorization']}\r\n"
    )
    status, sent = live.stream(head, 200 * MB)
    assert status == 413
    assert sent < 20 * MB, f"{sent} bytes went in before the 413"


def test_an_upload_over_its_limit_is_413_and_without_a_key_401(env, monkeypatch):
    configure(monkeypatch, max_upload_bytes=256 * 1024)
    admin = make_key(["admin"])
    head = (
        "POST /v1/models/some-model/versions HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
    )
    with LiveServer() as live:
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="w"\r\n\r\n'
        status, sent = live.stream(head, 1100 * MB, preamble=part)
        assert status == 401 and sent < 20 * MB
        keyed = head + f"Authorization: {admin['Authorization']}\r\n"
        status, sent = live.stream(keyed, 1100 * MB, preamble=part)
        assert status == 413 and sent < 20 * MB


def test_declared_length_over_the_limit_is_413(client, admin):
    response = client.post(
        "/v1/deletion-requests",
        headers={**admin, "Content-Type": "application/json"},
        content=b"{" + b" " * 2_100_000 + b"}",
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


def test_the_bearer_scheme_is_case_insensitive(client, admin):
    token = admin["Authorization"].split(" ", 1)[1]
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = client.get("/v1/models", headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 200, scheme
    assert client.get("/v1/models", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_a_method_not_allowed_is_405_naming_every_allowed_one(client, admin):
    for method, path, allowed in [
        ("DELETE", "/v1/models", {"GET", "POST"}),  # two routes share the path
        ("PATCH", "/v1/deletion-requests", {"GET", "POST"}),
        ("GET", "/v1/keys/some-key/revoke", {"POST"}),
        ("POST", "/admin/", {"GET", "HEAD"}),
    ]:
        response = client.request(method, path, headers=admin)
        assert response.status_code == 405, (method, path)
        assert response.headers["content-type"] == PROBLEM
        assert set(response.headers["allow"].split(", ")) == allowed, (method, path)


def test_answers_under_v1_are_not_stored_by_caches(client, admin):
    listed = client.get("/v1/models", headers=admin)
    assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
    # A polled read still revalidates: the client sends its ETag back itself.
    again = client.get("/v1/models", headers={**admin, "If-None-Match": listed.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-store"
    for answer in (
        client.post("/v1/models", headers=admin, json={}),  # 422
        client.get("/v1/models/nope", headers=admin),  # 404
        client.get("/v1/models"),  # 401
    ):
        assert answer.status_code >= 400 and answer.headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/healthz").headers.get("cache-control", "")
    assert client.get("/admin/").headers["cache-control"] == "no-cache"  # revalidated files


def test_a_key_over_its_rate_is_429_with_retry_after(env, monkeypatch):
    # One token per 5 s: the eight calls finish long before a token comes back, even on a
    # loaded machine (at one per second a slow run let a sixth call through).
    configure(monkeypatch, rate_limit_per_second=0.2, rate_limit_burst=5)
    from service.app import create_app

    fast, other = make_key(["admin"]), make_key(["admin"])
    with TestClient(create_app()) as client:
        statuses = [client.get("/v1/models", headers=fast).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
        refused = client.get("/v1/models", headers=fast)
        assert refused.headers["content-type"] == PROBLEM
        assert 1 <= int(refused.headers["retry-after"]) <= 6
        assert client.get("/v1/models", headers=other).status_code == 200


def test_guessing_keys_is_limited_per_address(env, monkeypatch):
    configure(monkeypatch, auth_failures_per_minute=20)
    from service.app import create_app

    admin = make_key(["admin"])
    with TestClient(create_app()) as client:
        statuses = [
            client.get("/v1/models", headers={"Authorization": f"Bearer ulk_guess_{i}"}).status_code
            for i in range(200)
        ]
        assert statuses[:20] == [401] * 20
        assert set(statuses[20:]) == {429}
        # The address is locked out for a while, a valid key included.
        locked = client.get("/v1/models", headers=admin)
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1


def test_rate_limits_are_shared_through_redis(env, redis_url, monkeypatch):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    configure(monkeypatch, broker_url=redis_url, rate_limit_per_second=0.5, rate_limit_burst=4)
    from service.app import create_app

    admin = make_key(["admin"])
    # Two apps stand for two API processes: they share one bucket per key.
    with TestClient(create_app()) as one, TestClient(create_app()) as two:
        assert [one.get("/v1/models", headers=admin).status_code for _ in range(3)] == [200] * 3
        assert two.get("/v1/models", headers=admin).status_code == 200
        assert two.get("/v1/models", headers=admin).status_code == 429
        assert one.get("/v1/models", headers=admin).status_code == 429


def test_rate_limits_fall_back_to_the_process_when_redis_is_away(env, monkeypatch):
    configure(
        monkeypatch, broker_url="redis://127.0.0.1:1/0", rate_limit_per_second=1, rate_limit_burst=3
    )
    from service.app import create_app

    admin = make_key(["admin"])
    with TestClient(create_app()) as client:
        started = time.monotonic()
        statuses = [client.get("/v1/models", headers=admin).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert time.monotonic() - started < 3, "a dead Redis must not stall requests"


def test_request_ids_and_an_access_log_without_personal_data(client, admin, caplog):
    caplog.set_level(logging.INFO, logger="unlearnd.access")
    response = client.get(
        "/v1/deletion-requests",
        headers={**admin, "X-Request-ID": "trace-42"},
        params={"subject_id": "user-8812"},
    )
    assert response.headers["x-request-id"] == "trace-42"
    client.get("/v1/datasets/some-dataset/samples/train/00017", headers=admin)
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    weird = client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"]
    assert weird != "a b\tc"
    from service.logs import JsonFormatter

    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "unlearnd.access"]
    assert len(lines) >= 4
    text = "\n".join(lines)
    assert "user-8812" not in text and "00017" not in text and "ulk_" not in text
    first = json.loads(lines[0])
    assert first["request_id"] == "trace-42"
    assert first["route"] == "/v1/deletion-requests" and first["status"] == 200
    assert first["key_id"] and first["tenant_id"]


def test_database_errors_never_carry_sql_parameters(env):
    from sqlalchemy import text

    from service.db import session_scope

    with pytest.raises(Exception) as raised, session_scope() as session:
        session.execute(text("SELECT 1 / :zero"), {"zero": 0, "secret": "user-8812"})
    assert "[SQL:" in str(raised.value)
    assert "user-8812" not in str(raised.value) and "[parameters:" not in str(raised.value)
