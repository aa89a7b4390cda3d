"""The hash-chained audit log names the first entry that was altered, removed or reordered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from service import audit_log
from service.db import session_scope
from service.jobs import dispatch
from tests.helpers.app import train_keys


def _verify():
    with session_scope() as session:
        return audit_log.verify(session)


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
    checked, broken = _verify()
    assert broken is None and checked >= 6


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
    _, broken = _verify()
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
    _, broken = _verify()
    assert broken is not None and broken.entry_id == ids[3] and "missing" in broken.reason

    with session_scope() as session:  # put it back wrong: swap two entries' contents
        session.execute(
            text("UPDATE audit_log SET id = :new WHERE id = :old"), {"new": ids[3], "old": ids[-1]}
        )
    _, broken = _verify()
    assert broken is not None and broken.entry_id == ids[3]


def _env(settings):
    import os

    return {**os.environ, **{f"UNLEARN_{k.upper()}": str(v) for k, v in settings.items()}}
