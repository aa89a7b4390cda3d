"""Erasure's edges (found by review): two requests of one batch naming the same samples
both stay not erasable while another model knows them; and a model trained after samples
were forgotten (and then erased from the source) never reads them when a request names
them, by key or by class."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ml.datasets import clear_cache
from service.db import session_scope
from service.jobs import dispatch
from service.tables import Job, ModelVersion, Sample, Tombstone, utcnow
from tests.helpers.app import create_model, make_key, run_queued_jobs, train_keys
from tests.helpers.own_data import tabular_rows, write_csv


@pytest.fixture
def embedded(sqlite_env):
    from service.app import create_app

    clear_cache()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, make_key(["admin"]), Path(sqlite_env["data_root"])
    clear_cache()


def _dataset(client, admin, root: Path, rows) -> dict:
    write_csv(root / "rows.csv", rows)
    source = {"kind": "manifest", "path": "rows.csv"}
    body = {"name": "rows", "source": source, "holdout_fraction": 0.25}
    return client.post("/v1/datasets", headers=admin, json=body).json()


def _submit(client, admin, model_id: str, subject: str, target: dict) -> str:
    body = {"model_id": model_id, "subject_id": subject, **target}
    answer = client.post("/v1/deletion-requests", headers=admin, json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def _run(client, admin, model_id: str) -> None:
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    for _ in range(3):
        if dispatch.dispatch_model(model_id) is None:
            break
        run_queued_jobs(model_id)


def test_batch_mates_naming_the_same_samples_wait_for_the_other_model(embedded):
    client, admin, root = embedded
    dataset = _dataset(client, admin, root, tabular_rows())
    one, other = (create_model(client, admin, dataset["id"]) for _ in range(2))
    run_queued_jobs(one["id"])
    run_queued_jobs(other["id"])
    keys = train_keys(client, admin, dataset["id"], 3)
    ids = [_submit(client, admin, one["id"], s, {"sample_keys": keys}) for s in ("a", "b")]
    _run(client, admin, one["id"])
    reads = [client.get(f"/v1/deletion-requests/{i}", headers=admin).json() for i in ids]
    assert [r["status"] for r in reads] == ["completed", "completed"]
    # `other` still knows the samples: neither request may let the product erase them.
    assert [r["source_erasable"] for r in reads] == [False, False]


@pytest.mark.parametrize("how", ["keys", "class"])
def test_a_later_model_never_reads_samples_erased_before_it_trained(embedded, how):
    client, admin, root = embedded
    rows = tabular_rows()
    dataset = _dataset(client, admin, root, rows)
    first_model = create_model(client, admin, dataset["id"])
    run_queued_jobs(first_model["id"])
    keys = train_keys(client, admin, dataset["id"], 3)
    first = _submit(client, admin, first_model["id"], "a", {"sample_keys": keys})
    _run(client, admin, first_model["id"])
    assert client.get(f"/v1/deletion-requests/{first}", headers=admin).json()["source_erasable"]
    later = create_model(client, admin, dataset["id"])
    run_queued_jobs(later["id"])
    write_csv(root / "rows.csv", [r for r in rows if r["key"] not in keys])  # erased
    clear_cache()
    label = next(r["label"] for r in rows if r["key"] == keys[0])
    target = {"sample_keys": keys[:1]} if how == "keys" else {"class_labels": [label]}
    second = _submit(client, admin, later["id"], "b", target)
    _run(client, admin, later["id"])
    read = client.get(f"/v1/deletion-requests/{second}", headers=admin).json()
    assert read["status"] == "completed", read


def test_what_a_model_learned_is_judged_by_the_forget_sequence_not_by_clocks(embedded):
    # Model `other` trained while the samples were active, on a worker whose clock runs an
    # hour ahead (or whose claim's timestamp fell between a publish's stamp and its commit):
    # by timestamps its job began after the samples were forgotten, so it "never learned"
    # them and their raw data looked erasable. It did learn them: the product may not erase.
    client, admin, root = embedded
    dataset = _dataset(client, admin, root, tabular_rows())
    one, other = (create_model(client, admin, dataset["id"]) for _ in range(2))
    run_queued_jobs(one["id"])
    run_queued_jobs(other["id"])
    ahead = utcnow() + timedelta(hours=1)
    with session_scope() as session:
        (job,) = session.scalars(select(Job).where(Job.model_id == other["id"])).all()
        assert job.forget_seq == 0  # it read its sets before anything was forgotten
        job.started_at = ahead
        for version in session.scalars(
            select(ModelVersion).where(ModelVersion.model_id == other["id"])
        ):
            version.created_at = ahead
        session.commit()
    keys = train_keys(client, admin, dataset["id"], 3)
    request = _submit(client, admin, one["id"], "a", {"sample_keys": keys})
    _run(client, admin, one["id"])
    read = client.get(f"/v1/deletion-requests/{request}", headers=admin).json()
    assert read["status"] == "completed"
    assert read["source_erasable"] is False
    with session_scope() as session:
        numbers = session.scalars(
            select(Tombstone.forget_seq).join(Sample).where(Sample.key.in_(keys))
        ).all()
    assert numbers == [1, 1, 1]  # one publish, the dataset's first
