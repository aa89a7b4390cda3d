"""The hash-chained audit log names the first entry that was altered, removed or reordered;
signed with a key the database does not hold, it also catches a database owner who rewrites
the tail and recomputes the hashes, and a certificate outlives a log cut short."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text, update

from service import audit_log
from service.audit_signing import PublicKey, generate
from service.db import session_scope
from service.jobs import dispatch
from service.tables import AuditLogEntry
from tests.helpers.app import configure, forget_now, train_keys


def _verify(keys=None):
    with session_scope() as session:
        return audit_log.verify(session, keys=keys)


def _fill(client, admin, model):
    for key in train_keys(client, admin, model["dataset_id"], 3):
        client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": model["id"], "subject_id": "s", "sample_keys": [key]},
        )
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    dispatch.dispatch_model(model["id"])  # batching logs each request's receipt


def test_untouched_chain_verifies(client, admin, ready_model):
    _fill(client, admin, ready_model)
    result = _verify()
    assert result.broken is None and result.checked >= 6 and result.signed == 0


def test_altered_entry_is_named(client, admin, ready_model, env):
    _fill(client, admin, ready_model)
    with session_scope() as session:
        victim = session.execute(
            text(
                "SELECT id FROM audit_log WHERE action = 'deletion_request.received' "
                "ORDER BY id LIMIT 1"
            )
        ).scalar_one()
        session.execute(
            text("UPDATE audit_log SET payload = CAST(:p AS jsonb) WHERE id = :id"),
            {"p": '{"model_id": "forged"}', "id": victim},
        )
    broken = _verify().broken
    assert broken is not None and broken.entry_id == victim and "altered" in broken.reason
    result = subprocess.run(
        [str(Path(sys.executable).with_name("unlearnd")), "audit", "verify"],
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=120,
    )
    assert result.returncode == 1 and f"entry {victim}" in result.stdout


def test_removed_and_reordered_entries_are_named(client, admin, ready_model):
    _fill(client, admin, ready_model)
    with session_scope() as session:
        ids = session.execute(text("SELECT id FROM audit_log ORDER BY id")).scalars().all()
        session.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[3]})
    broken = _verify().broken
    assert broken is not None and broken.entry_id == ids[3] and "missing" in broken.reason

    with session_scope() as session:  # put it back wrong: swap two entries' contents
        session.execute(
            text("UPDATE audit_log SET id = :new WHERE id = :old"), {"new": ids[3], "old": ids[-1]}
        )
    broken = _verify().broken
    assert broken is not None and broken.entry_id == ids[3]


# ------------------------------------------------------------------ signatures


@pytest.fixture
def signing(monkeypatch):
    """A signing key in the settings; its public half, as a verifier would hold it."""
    private, public = generate()
    configure(monkeypatch, audit_signing_key=private)
    return private, PublicKey.parse(public)


def _cli(env, *args):
    return subprocess.run(
        [str(Path(sys.executable).with_name("unlearnd")), "audit", *args],
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=120,
    )


def _rewrite(entry_id: int, payload: dict) -> None:
    """What a database owner can do: change an entry and recompute its hash, and every
    later one's, so the chain verifies again."""
    with session_scope() as session:
        entries = session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.id >= entry_id).order_by(AuditLogEntry.id)
        ).all()
        prev_hash = entries[0].prev_hash
        entries[0].payload = payload
        for entry in entries:
            entry.prev_hash, entry.hash = prev_hash, ""
            session.flush()
            entry.hash = audit_log.entry_hash(prev_hash, entry)
            prev_hash = entry.hash


def test_a_signed_chain_verifies_with_the_public_key(signing, client, admin, ready_model, env):
    private, public = signing
    _fill(client, admin, ready_model)
    result = _verify([public])
    assert result.broken is None and result.signed == result.checked >= 6
    served = client.get("/v1/audit-log/public-key", headers=admin).json()
    assert served == {"algorithm": "Ed25519", "public_key": public.text, "key_id": public.key_id}
    cli = _cli({**env, "audit_signing_key": private}, "verify", f"--public-key={public.text}")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"signatures checked on {result.checked}" in cli.stdout
    assert f"head: entry {result.head.entry_id} {result.head.hash}" in cli.stdout
    other = PublicKey.parse(generate()[1])
    broken = _verify([other]).broken
    assert broken is not None and broken.entry_id == 1 and other.key_id not in broken.reason


def test_a_tail_rewritten_in_sql_with_recomputed_hashes_is_caught(
    signing, client, admin, ready_model, env
):
    private, public = signing
    _fill(client, admin, ready_model)
    with session_scope() as session:
        last = session.scalar(select(func.max(AuditLogEntry.id)))
    _rewrite(last - 1, {"model_id": "forged"})
    assert _verify().broken is None  # the chain alone cannot tell
    broken = _verify([public]).broken
    assert broken is not None and broken.entry_id == last - 1
    assert "signature does not match" in broken.reason
    cli = _cli({**env, "audit_signing_key": private}, "verify", f"--public-key={public.text}")
    assert cli.returncode == 1 and f"entry {last - 1}" in cli.stdout

    with session_scope() as session:  # nor can the signatures be dropped
        session.execute(
            update(AuditLogEntry).where(AuditLogEntry.id >= last - 1).values(signature=None)
        )
    broken = _verify([public]).broken
    assert broken is not None and broken.entry_id == last - 1
    assert "not signed, though earlier ones are" in broken.reason


def test_a_certificate_outlives_a_log_cut_short(signing, client, admin, ready_model, env, tmp_path):
    private, public = signing
    keys = train_keys(client, admin, ready_model["dataset_id"], 5)
    request = forget_now(client, admin, ready_model["id"], keys)
    url = f"/v1/deletion-requests/{request['id']}/certificate"
    certificate = client.get(url, headers=admin).json()
    entries = certificate["audit_log"]
    assert entries and all(e["signature"] and e["key_id"] == public.key_id for e in entries)
    path = tmp_path / "certificate.json"
    path.write_text(json.dumps(certificate))
    settings = {**env, "audit_signing_key": private}
    check = _cli(settings, "verify", f"--public-key={public.text}", "--certificate", str(path))
    assert check.returncode == 0, check.stdout + check.stderr

    with session_scope() as session:  # cut the log back to before the request
        first = min(entry["id"] for entry in entries)
        session.execute(delete(AuditLogEntry).where(AuditLogEntry.id >= first))
    assert _verify([public]).broken is None  # what is left is a valid chain
    check = _cli(settings, "verify", f"--public-key={public.text}", "--certificate", str(path))
    assert check.returncode == 1 and "no longer in the log" in check.stdout

    forged = {**entries[0], "payload": {"forged": True}}  # nor can a certificate be edited
    path.write_text(json.dumps({"audit_log": [forged]}))
    check = _cli(settings, "verify", f"--public-key={public.text}", "--certificate", str(path))
    assert check.returncode == 1 and "does not match its own hash" in check.stdout


def test_the_signing_key_is_checked_and_required_in_production(env, monkeypatch, tmp_path):
    from pydantic import ValidationError

    from service.settings import Settings

    private, public = generate()
    key_file = tmp_path / "audit.key"
    key_file.write_text(private + "\n")
    configure(monkeypatch, audit_signing_key_file=key_file)
    assert Settings().audit_signer.public_key.text == public
    configure(monkeypatch, audit_signing_key_file="", audit_signing_key=private[:-4])
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "not usable" in str(raised.value) and private[:-4] not in str(raised.value)
    configure(
        monkeypatch,
        audit_signing_key="",
        environment="production",
        bootstrap_admin_key=secrets.token_urlsafe(32),
    )
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "UNLEARN_AUDIT_SIGNING_KEY" in str(raised.value)
    configure(monkeypatch, audit_signing_key=private)
    assert Settings().audit_signer is not None


def test_no_public_key_without_a_signing_key(client, admin):
    answer = client.get("/v1/audit-log/public-key", headers=admin)
    assert answer.status_code == 404 and answer.headers["content-type"].startswith(
        "application/problem+json"
    )


def _env(settings):
    import os

    return {**os.environ, **{f"UNLEARN_{k.upper()}": str(v) for k, v in settings.items()}}
