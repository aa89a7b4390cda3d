"""API keys: listing without secrets, rotation, revocation and expiry through the admin
endpoint (the CLI's: tests/workers/test_cli.py); production refuses weak and development
keys; secrets stay out of errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from service.audit_signing import generate
from service.db import session_scope
from service.tables import ApiKey, utcnow
from tests.helpers.app import configure, make_key

DEV_KEY = "unlearnd-dev-admin-key-for-make-run"


def bearer(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}


def test_keys_are_listed_without_secrets_and_revoked(client, admin, key_for):
    created = client.post(
        "/v1/keys", headers=admin, json={"name": "backend", "scopes": ["requests:write"]}
    )
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["key"].startswith("ulk_") and new["status"] == "active"
    listed = client.get("/v1/keys", headers=admin)
    assert listed.status_code == 200
    assert {k["id"] for k in listed.json()["items"]} >= {new["id"]}
    assert new["key"] not in listed.text and "secret" not in listed.text
    assert all("key" not in item for item in listed.json()["items"])
    assert client.get("/v1/models", headers=bearer(new["key"])).status_code == 403  # scopes
    body = {"model_id": "m", "subject_id": "s", "sample_keys": ["k"]}
    assert (
        client.post("/v1/deletion-requests", headers=bearer(new["key"]), json=body).status_code
        == 404
    )
    revoked = client.post(f"/v1/keys/{new['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert (
        client.post("/v1/deletion-requests", headers=bearer(new["key"]), json=body).status_code
        == 401
    )
    # Only admins manage keys, and only their own tenant's.
    assert client.get("/v1/keys", headers=key_for(["models:read"])).status_code == 403
    stranger = key_for(["admin"], tenant="other")
    assert client.get(f"/v1/keys/{new['id']}", headers=stranger).status_code == 404
    assert client.post(f"/v1/keys/{new['id']}/revoke", headers=stranger).status_code == 404


def test_rotation_keeps_the_old_key_for_its_grace_period(client, admin):
    old = client.post("/v1/keys", headers=admin, json={"scopes": ["models:read"]}).json()
    rotated = client.post(
        f"/v1/keys/{old['id']}/rotate", headers=admin, json={"grace_seconds": 600}
    )
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["scopes"] == ["models:read"] and new["key"] != old["key"]
    for key in (old["key"], new["key"]):
        assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()["items"]}
    assert listed[old["id"]]["replaced_by"] == new["id"] and listed[old["id"]]["expires_at"]
    again = client.post(f"/v1/keys/{old['id']}/rotate", headers=admin, json={})
    assert again.status_code == 409
    now = client.post(f"/v1/keys/{new['id']}/rotate", headers=admin, json={"grace_seconds": 0})
    assert now.status_code == 201
    assert client.get("/v1/models", headers=bearer(new["key"])).status_code == 401
    assert client.get("/v1/models", headers=bearer(now.json()["key"])).status_code == 200


def test_expired_keys_are_refused(client, admin):
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    refused = client.post("/v1/keys", headers=admin, json={"scopes": ["admin"], "expires_at": past})
    assert refused.status_code == 422
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    key = client.post("/v1/keys", headers=admin, json={"scopes": ["admin"], "expires_at": soon})
    assert key.status_code == 201
    plaintext = key.json()["key"]
    assert client.get("/v1/models", headers=bearer(plaintext)).status_code == 200
    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.json()["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    from service.keys.service import forget_cached_keys

    forget_cached_keys()  # another process's cache would forget within CACHE_SECONDS
    assert client.get("/v1/models", headers=bearer(plaintext)).status_code == 401
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()["items"]}
    assert listed[key.json()["id"]]["status"] == "expired"


NEAR_DEV_KEYS = [DEV_KEY[:-1] + "N", DEV_KEY.upper(), DEV_KEY.replace("-", "_"), f"x{DEV_KEY}-2026"]


@pytest.mark.parametrize("weak", ["a" * 16, "ab" * 40, DEV_KEY, "Short1!", *NEAR_DEV_KEYS])
def test_production_refuses_weak_bootstrap_keys_without_quoting_them(env, monkeypatch, weak):
    from service.settings import Settings

    monkeypatch.setenv("UNLEARN_ENVIRONMENT", "production")
    monkeypatch.setenv("UNLEARN_AUDIT_SIGNING_KEY", generate()[0])  # production needs one
    monkeypatch.setenv("UNLEARN_BOOTSTRAP_ADMIN_KEY", weak)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert weak not in str(raised.value) and weak[:8] not in str(raised.value)
    assert "refused in production" in str(raised.value)


def test_production_accepts_a_random_bootstrap_key(env, monkeypatch):
    import secrets

    from service.settings import Settings

    monkeypatch.setenv("UNLEARN_ENVIRONMENT", "production")
    monkeypatch.setenv("UNLEARN_AUDIT_SIGNING_KEY", generate()[0])  # production needs one
    # The documented generators. A key of exactly 128 random bits (token_urlsafe(16)) is
    # refused about 1% of the time: the estimate counts the character classes a key happens
    # to use, and 22 characters without a digit, '-' or '_' estimate at 125 bits.
    for key in (secrets.token_urlsafe(32), secrets.token_hex(32), secrets.token_urlsafe(24)):
        monkeypatch.setenv("UNLEARN_BOOTSTRAP_ADMIN_KEY", key)
        assert Settings().bootstrap_admin_key.get_secret_value() == key


def test_a_stored_development_key_is_refused_after_a_restart_in_production(
    env, monkeypatch, client
):
    from service.bootstrap import RefusedToStart, prepare

    configure(monkeypatch, bootstrap_admin_key=DEV_KEY)
    prepare(announce=lambda _: None)  # development: the make-run key is installed
    assert client.get("/v1/models", headers=bearer(DEV_KEY)).status_code == 200
    strong = "Zq8" + "x".join(str(i) for i in range(40))
    configure(
        monkeypatch,
        environment="production",
        bootstrap_admin_key=strong,
        audit_signing_key=generate()[0],
    )
    with pytest.raises(RefusedToStart) as refused:
        prepare(announce=lambda _: None)
    assert DEV_KEY not in str(refused.value) and "unlearnd keys revoke" in str(refused.value)
    # Even a process that skipped the check never authenticates it.
    assert client.get("/v1/models", headers=bearer(DEV_KEY)).status_code == 401
    # So it is no admin key to keep: the operator revokes it as told, although it is its
    # tenant's only one, and serves.
    from service.keys import service as keys

    with session_scope() as session:
        [stored] = keys.stored_development_keys(session)
        keys.revoke(session, key_id=stored.id)
    prepare(announce=lambda _: None)


def test_a_bootstrap_key_that_cannot_be_installed_is_announced(env, monkeypatch):
    from service.bootstrap import prepare

    make_key(["admin"])
    said: list[str] = []
    configure(monkeypatch, bootstrap_admin_key="a-new-key-that-was-never-installed-0123")
    prepare(announce=said.append)
    assert any("NOT installed" in line for line in said)
    assert not any("a-new-key" in line for line in said)


def test_a_tenants_last_active_admin_key_is_not_revoked(client, admin):
    def revoke(key_id: str, headers: dict[str, str]) -> int:
        return client.post(f"/v1/keys/{key_id}/revoke", headers=headers).status_code

    [own] = client.get("/v1/keys", headers=admin).json()["items"]
    refused = client.post(f"/v1/keys/{own['id']}/revoke", headers=admin)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert "last active admin key" in refused.json()["detail"]
    assert client.get("/v1/models", headers=admin).status_code == 200  # still works
    # Keys that do not keep the tenant managed do not count: a reader, an admin key
    # on its way out after a rotation.
    reader = client.post("/v1/keys", headers=admin, json={"scopes": ["models:read"]}).json()
    second = client.post("/v1/keys", headers=admin, json={"scopes": ["admin"]}).json()
    third = client.post(
        f"/v1/keys/{second['id']}/rotate", headers=admin, json={"grace_seconds": 600}
    ).json()
    assert revoke(third["id"], admin) == 200  # the first admin key remains
    assert revoke(own["id"], admin) == 409  # the second is only in its grace period
    assert revoke(reader["id"], admin) == 200
    fourth = client.post("/v1/keys", headers=admin, json={"scopes": ["admin"]}).json()
    assert revoke(own["id"], admin) == 200  # an admin may revoke its own key, not the last
    assert client.get("/v1/models", headers=admin).status_code == 401
    assert revoke(fourth["id"], bearer(fourth["key"])) == 409
    assert revoke(own["id"], bearer(fourth["key"])) == 200  # already revoked: no change
