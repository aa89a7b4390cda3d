"""Erasure of forgotten samples' raw data, end to end through the service: a completed
request says `source_erasable` (and so does its completion callback); once its samples'
files and manifest rows are deleted, a later batch, a PGU cache rebuild, a retrain and a
reference audit of a later version all succeed, while a re-audit of the version that forgot
them is a 409 naming them; another model that still knows the samples keeps them needed;
a worker's kept copy of a tabular source drops their features."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ml.datasets import clear_cache, open_source
from service.db import session_scope
from service.enums import JobKind, JobStatus
from service.jobs import dispatch, lifecycle
from service.settings import get_settings
from service.tables import CallbackDelivery, Job, Model, utcnow
from tests.helpers.app import create_model, forget_now, make_key, run_queued_jobs, train_keys
from tests.helpers.own_data import tabular_rows, write_csv, write_pngs, write_tree


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _register(client, admin, name: str, source: dict) -> dict:
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": name, "source": source, "holdout_fraction": 0.25},
    )
    assert response.status_code == 201, response.text
    return response.json()


def _request(client, admin, request_id: str) -> dict:
    return client.get(f"/v1/deletion-requests/{request_id}", headers=admin).json()


def _forget(client, admin, model_id: str, keys: list[str], **extra) -> dict:
    response = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model_id, "subject_id": "s", "sample_keys": keys, **extra},
    )
    assert response.status_code == 202, response.text
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    for _ in range(2):  # a cache job may come first, then the batch
        assert dispatch.dispatch_model(model_id) is not None
        run_queued_jobs(model_id)
        request = _request(client, admin, response.json()["id"])
        if request["status"] != "pending":
            break
    return request


def _jobs(model_id: str, kind: JobKind) -> list[Job]:
    statement = select(Job).where(Job.model_id == model_id, Job.kind == kind)
    with session_scope() as session:
        return list(session.scalars(statement.order_by(Job.created_at)))


def _manifest(root: Path) -> tuple[dict, Callable[[list[str]], None]]:
    """A CSV manifest of PNG files; what erases samples from it (every file, half the rows)."""
    rows = write_pngs(root)
    write_csv(root / "digits.csv", rows)

    def erase(keys: list[str]) -> None:
        for row in rows:
            if row["key"] in keys:
                (root / str(row["path"])).unlink()
        write_csv(root / "digits.csv", [r for r in rows if r["key"] not in keys[len(keys) // 2 :]])

    return {"kind": "manifest", "path": "digits.csv"}, erase


def _tree(root: Path) -> tuple[dict, Callable[[list[str]], None]]:
    """An image-folder tree; what erases samples from it (their files)."""
    write_tree(root)

    def erase(keys: list[str]) -> None:
        for key in keys:
            (root / "tree" / key).unlink()

    return {"kind": "imagefolder", "root": "tree"}, erase


@pytest.mark.parametrize("make", [_manifest, _tree], ids=["manifest", "imagefolder"])
def test_erased_samples_are_read_by_no_later_job(client, admin, env, make):
    root = Path(env["data_root"])
    source, erase = make(root)
    dataset = _register(client, admin, "digits", source)
    model = create_model(client, admin, dataset["id"], unlearner={"name": "pgu"})
    run_queued_jobs(model["id"])
    keys = train_keys(client, admin, dataset["id"], 16)
    first, second, third, fourth = keys[:4], keys[4:8], keys[8:12], keys[12:16]

    request = _forget(
        client, admin, model["id"], first, callback_url="https://hooks.example.com/unlearn"
    )
    assert request["status"] == "completed" and request["result_version"] == 2, request
    assert request["source_erasable"] is True
    with session_scope() as session:
        payloads = {
            d.payload["status"]: d.payload
            for d in session.scalars(
                select(CallbackDelivery).where(CallbackDelivery.request_id == request["id"])
            )
        }
    assert payloads["completed"]["source_erasable"] is True
    assert payloads["auditing"]["source_erasable"] is False
    # While the files are there, the version that forgot them may be audited again.
    again = client.post(
        f"/v1/models/{model['id']}/versions/2/audit", headers=admin, json={"reference": "none"}
    )
    assert again.status_code == 202, again.text
    run_queued_jobs(model["id"])

    erase(first)

    later = _forget(client, admin, model["id"], second)  # a later batch, with PGU's cache
    assert later["status"] == "completed" and later["result_version"] == 3, later
    patched = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"unlearner": {"name": "retrain"}}
    )
    assert patched.status_code == 200, patched.text
    retrained = _forget(client, admin, model["id"], third)  # a retrain from scratch
    assert retrained["status"] == "completed" and retrained["result_version"] == 4, retrained
    assert client.get(f"/v1/models/{model['id']}/versions/4", headers=admin).json()["training"]
    client.patch(f"/v1/models/{model['id']}", headers=admin, json={"unlearner": {"name": "pgu"}})
    rebuilt = _forget(client, admin, model["id"], fourth)  # PGU's cache of version 4 first
    assert rebuilt["status"] == "completed" and rebuilt["result_version"] == 5, rebuilt
    caches = _jobs(model["id"], JobKind.CACHE)
    assert caches[-1].base_version == 4 and caches[-1].status == "succeeded"

    audit = client.post(
        f"/v1/models/{model['id']}/versions/5/audit", headers=admin, json={"reference": "retrain"}
    )
    assert audit.status_code == 202, audit.text
    run_queued_jobs(model["id"])
    job = client.get(f"/v1/jobs/{audit.json()['id']}", headers=admin).json()
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/models/{model['id']}/versions/5/audit", headers=admin).json()
    assert report["reference"] is not None

    refused = client.post(
        f"/v1/models/{model['id']}/versions/2/audit", headers=admin, json={"reference": "retrain"}
    )
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "4 of the 4 sample(s) it forgot are erased" in detail, detail
    assert all(repr(key) in detail for key in first), detail


@pytest.fixture(params=["postgres", "sqlite"])
def any_backend(request) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    """The same client on Postgres and on the embedded SQLite default."""
    from service.app import create_app

    values = request.getfixturevalue("env" if request.param == "postgres" else "sqlite_env")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, make_key(["admin"]), Path(values["data_root"])


def test_another_model_that_knows_the_samples_keeps_them_needed(any_backend):
    client, admin, root = any_backend
    write_csv(root / "rows.csv", tabular_rows())
    dataset = _register(client, admin, "rows", {"kind": "manifest", "path": "rows.csv"})
    one = create_model(client, admin, dataset["id"])
    other = create_model(client, admin, dataset["id"])
    run_queued_jobs(one["id"])
    run_queued_jobs(other["id"])
    keys = train_keys(client, admin, dataset["id"], 3)

    first = _forget(client, admin, one["id"], keys)
    assert first["status"] == "completed" and first["source_erasable"] is False
    repeated = client.post(  # keys the model already forgot: completed at once, as needed
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": one["id"], "subject_id": "s", "sample_keys": keys[:1]},
    ).json()
    assert repeated["status"] == "completed" and repeated["source_erasable"] is False
    second = _forget(client, admin, other["id"], keys)
    assert second["status"] == "completed" and second["source_erasable"] is True
    assert _request(client, admin, first["id"])["source_erasable"] is True

    again = client.post(  # keys the model already forgot: completed at once, erasable
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": one["id"], "subject_id": "s", "sample_keys": keys[:2]},
    ).json()
    assert again["status"] == "completed" and again["already_forgotten"] == keys[:2]
    assert again["source_erasable"] is True
    # A model made after they were forgotten never learned them: it needs nothing.
    late = create_model(client, admin, dataset["id"])
    run_queued_jobs(late["id"])
    assert _request(client, admin, first["id"])["source_erasable"] is True


def test_a_workers_kept_copy_drops_erasable_samples(client, admin, env):
    root = Path(env["data_root"])
    write_csv(root / "rows.csv", tabular_rows())
    source = {"kind": "manifest", "path": "rows.csv"}
    dataset = _register(client, admin, "rows", source)
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    keys = train_keys(client, admin, dataset["id"], 3)
    settings = get_settings()
    kept = open_source(source, settings.data_root, cache_bytes=settings.dataset_cache_bytes)
    positions, _ = kept.positions_of(keys)
    assert np.abs(kept.raw(positions).numpy()).sum() > 0

    request = forget_now(client, admin, model["id"], keys)
    assert _request(client, admin, request["id"])["source_erasable"] is True
    kept_now = open_source(source, settings.data_root, cache_bytes=settings.dataset_cache_bytes)
    assert kept_now is kept  # the copy the jobs used, kept between them
    assert kept.erased == set(positions.tolist())
    assert not kept.raw(positions).numpy().any()  # their features are gone from it
    others = np.array([p for p in range(len(kept.keys())) if p not in kept.erased][:5])
    assert np.abs(kept.raw(others).numpy()).sum() > 0


def test_a_job_that_began_while_the_samples_were_active_keeps_them_needed(client, admin, env):
    root = Path(env["data_root"])
    write_csv(root / "rows.csv", tabular_rows())
    dataset = _register(client, admin, "rows", {"kind": "manifest", "path": "rows.csv"})
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    with session_scope() as session:  # a long reference audit of version 1, still running
        row = session.get(Model, model["id"])
        assert row is not None
        audit = lifecycle.new_job(session, row, JobKind.AUDIT, version=1)
        audit.status, audit.started_at = JobStatus.AUDITING, utcnow()
        session.commit()
        audit_id = audit.id
    request = _forget(client, admin, model["id"], train_keys(client, admin, dataset["id"], 3))
    assert request["status"] == "completed" and request["source_erasable"] is False
    with session_scope() as session:
        job = session.get(Job, audit_id)
        assert job is not None
        job.status = JobStatus.SUCCEEDED
        session.commit()
    assert _request(client, admin, request["id"])["source_erasable"] is True
