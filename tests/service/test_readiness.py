"""``/readyz``: the release's version, the database's migration against this code's head
(503 when behind), the broker, and the workers seen in the last minute per queue with their
devices, from the beats workers write (``service.presence``, ``workers.presence``)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service import outbox, presence
from service.db import session_scope
from service.version import VERSION
from tests.helpers.app import configure
from workers.presence import PresenceBeat


@pytest.fixture
def embedded_client(sqlite_env):
    from service.app import create_app

    presence.forget_local()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client
    presence.forget_local()


def _set_revision(revision: str) -> None:
    with session_scope() as session:
        session.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_ready_names_version_migration_and_every_queue(embedded_client):
    body = embedded_client.get("/readyz").json()
    assert body["status"] == "ready" and body["version"] == VERSION != ""
    assert body["database"] == "ok" and body["broker"] == "embedded"
    assert body["migration"]["current"] == body["migration"]["head"]
    assert body["migration"]["state"] == "at_head"
    assert body["workers"] == {queue: [] for queue in outbox.QUEUES}


def test_a_database_behind_the_code_is_503_naming_both_revisions(embedded_client):
    head = embedded_client.get("/readyz").json()["migration"]["head"]
    _set_revision("0001")
    response = embedded_client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["checks"]["migration"] == {"current": "0001", "head": head, "state": "behind"}
    assert "unlearnd migrate" in problem["detail"]


def test_a_database_migrated_by_a_newer_release_stays_ready(embedded_client):
    """Rolling upgrades migrate first: the old release's API keeps serving meanwhile."""
    _set_revision("9999_from_a_newer_release")
    response = embedded_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["migration"]["state"] == "ahead"


def test_workers_are_listed_per_queue_with_their_device(embedded_client):
    gpu = PresenceBeat(("gpu", "control"), "cuda:1", ("2.14.1+cu130", "13.0"))
    gpu.name = "gpu-host:1"
    gpu.beat()
    callbacks = PresenceBeat(("callbacks",), None)
    callbacks.name = "cb-host:2"
    callbacks.beat()
    workers = embedded_client.get("/readyz").json()["workers"]
    assert [w["name"] for w in workers["gpu"]] == ["gpu-host:1"]
    assert [w["name"] for w in workers["control"]] == ["gpu-host:1"]
    assert workers["audit"] == []
    listed = workers["gpu"][0]
    assert (listed["device"], listed["torch"], listed["cuda"]) == ("cuda:1", "2.14.1+cu130", "13.0")
    assert 0 <= listed["seen_seconds_ago"] < 5
    assert workers["callbacks"][0]["device"] is None


def test_a_worker_silent_for_a_minute_is_no_longer_seen(sqlite_env):
    presence.forget_local()
    old = presence.WorkerBeat("old:1", ("gpu",), "cpu", None, None, time.time() - 61)
    fresh = presence.WorkerBeat("new:1", ("gpu",), "cpu", None, None, time.time())
    presence.record(old)
    presence.record(fresh)
    assert [beat.name for beat in presence.seen() or []] == ["new:1"]
    presence.forget_local()


@pytest.mark.redis
def test_beats_cross_processes_through_redis_and_expire(monkeypatch, sqlite_env, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    configure(monkeypatch, broker_url=redis_url)
    beat = PresenceBeat(("audit",), "cuda:0", ("2.14.1", "13.0")).start()
    try:
        seen = presence.seen()
        assert seen is not None and [b.name for b in seen] == [beat.name]
        assert seen[0].queues == ("audit",) and seen[0].device == "cuda:0"
        ttl = client.ttl(presence.KEY_PREFIX + beat.name)
        assert 0 < ttl <= presence.SEEN_SECONDS
        # A beat left from a worker that died is not listed once a minute has passed.
        assert presence.seen(time.time() + presence.SEEN_SECONDS + 1) == []
        beat.stop()  # a clean stop drops out at once
        assert presence.seen() == []
    finally:
        beat.stop()
        client.flushdb()


def test_beats_are_unknown_with_a_broker_that_is_not_redis(monkeypatch, sqlite_env):
    configure(monkeypatch, broker_url="amqp://guest@127.0.0.1:1//")
    assert presence.seen() is None


def test_a_database_never_migrated_is_behind(monkeypatch, tmp_path):
    configure(monkeypatch, database_url="", state_dir=str(tmp_path / "fresh"), broker_url="")
    (tmp_path / "fresh").mkdir()
    from service.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migration"]["current"] is None


def test_readiness_probes_do_not_log_per_call(embedded_client, caplog):
    with caplog.at_level("INFO", logger="alembic"):
        for _ in range(3):
            assert embedded_client.get("/readyz").status_code == 200
    assert [r for r in caplog.records if r.name.startswith("alembic")] == []
