"""Auth, scopes and tenants on every resource; datasets, models, versions and jobs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save

from tests.helpers.app import create_dataset, create_model, run_queued_jobs, train_keys


def test_operations(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "http_requests_total" in metrics.text
    assert "unlearn_pending_requests" in metrics.text
    assert client.get("/openapi.json").json()["info"]["title"] == "unlearnd"


def test_readyz_503_without_database(client, monkeypatch):
    from service.db import reset_engine
    from service.settings import get_settings

    monkeypatch.setenv("UNLEARN_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    reset_engine()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    listed = client.get("/v1/models", headers={"Authorization": "Bearer ulk_a_b"})
    assert listed.status_code == 503


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer ulk_0000_forged"},
    ],
)
def test_missing_or_bad_key_is_401(client, headers, admin):
    for method, path in [
        ("get", "/v1/models"),
        ("get", "/v1/datasets"),
        ("get", "/v1/deletion-requests"),
        ("get", "/v1/jobs"),
        ("get", "/v1/me"),
        ("post", "/v1/deletion-requests"),
    ]:
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["status"] == 401


def test_a_key_can_read_its_own_tenant_and_scopes(client, key_for):
    headers = key_for(["requests:read", "audit:read"], tenant="globex")
    caller = client.get("/v1/me", headers=headers).json()
    assert caller["tenant"] == "globex" and caller["scopes"] == ["audit:read", "requests:read"]
    assert set(caller) == {"key_id", "key_name", "tenant_id", "tenant", "scopes"}


def test_scopes_are_enforced(client, admin, key_for, ready_model):
    reader = key_for(["requests:read"])
    model_reader = key_for(["models:read"])
    body = {
        "model_id": ready_model["id"],
        "subject_id": "s",
        "sample_keys": train_keys(client, admin, ready_model["dataset_id"], 1),
    }
    assert client.post("/v1/deletion-requests", headers=reader, json=body).status_code == 403
    assert client.get("/v1/models", headers=reader).status_code == 403
    assert client.get("/v1/models", headers=model_reader).status_code == 200
    assert client.post("/v1/datasets", headers=model_reader, json={}).status_code == 403
    assert (
        client.post(f"/v1/models/{ready_model['id']}/flush", headers=model_reader).status_code
        == 403
    )
    weights = f"/v1/models/{ready_model['id']}/versions/1/weights"
    assert client.get(weights, headers=key_for(["requests:read", "audit:read"])).status_code == 403
    assert client.get(weights, headers=model_reader).status_code == 200
    assert client.get(weights, headers=admin).status_code == 200


def test_other_tenants_objects_are_404(client, admin, key_for, ready_model):
    stranger = key_for(["admin"], tenant="other")
    model_id, dataset_id = ready_model["id"], ready_model["dataset_id"]
    request = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={
            "model_id": model_id,
            "subject_id": "s",
            "sample_keys": train_keys(client, admin, dataset_id, 1),
        },
    ).json()
    job_id = client.get("/v1/jobs", headers=admin).json()["items"][0]["id"]
    for path in [
        f"/v1/models/{model_id}",
        f"/v1/models/{model_id}/versions",
        f"/v1/models/{model_id}/versions/1",
        f"/v1/models/{model_id}/versions/1/weights",
        f"/v1/datasets/{dataset_id}",
        f"/v1/datasets/{dataset_id}/samples",
        f"/v1/datasets/{dataset_id}/samples/train/00001",
        f"/v1/deletion-requests/{request['id']}",
        f"/v1/jobs/{job_id}",
    ]:
        assert client.get(path, headers=stranger).status_code == 404, path
    assert (
        client.post(f"/v1/deletion-requests/{request['id']}/cancel", headers=stranger).status_code
        == 404
    )
    assert (
        client.post(
            "/v1/deletion-requests",
            headers=stranger,
            json={"model_id": model_id, "subject_id": "s", "sample_keys": ["train/00001"]},
        ).status_code
        == 404
    )
    assert client.get("/v1/models", headers=stranger).json()["items"] == []
    assert client.get("/v1/deletion-requests", headers=stranger).json()["items"] == []


def test_datasets(client, admin, env):
    dataset = create_dataset(client, admin)
    assert dataset["num_classes"] == 10 and dataset["input_shape"] == [1, 8, 8]
    counts = dataset["counts"]
    assert counts["train"] + counts["holdout"] + counts["test"] == 1797
    assert abs(counts["holdout"] - 0.1 * (counts["train"] + counts["holdout"])) <= 1
    assert (
        client.post(
            "/v1/datasets",
            headers=admin,
            json={"name": "digits", "source": {"kind": "builtin", "name": "sklearn-digits"}},
        ).status_code
        == 409
    )
    listed = client.get("/v1/datasets", headers=admin).json()["items"]
    assert [d["id"] for d in listed] == [dataset["id"]]
    sample = client.get(f"/v1/datasets/{dataset['id']}/samples/train/00003", headers=admin).json()
    assert sample["state"] == "active" and sample["forgotten_by"] == []
    assert (
        client.get(f"/v1/datasets/{dataset['id']}/samples/nope", headers=admin).status_code == 404
    )
    assert client.get("/v1/datasets/unknown", headers=admin).status_code == 404


def test_registering_a_dataset_leaves_postgres_statistics_of_its_samples(client, admin, env):
    """Key lookups are planned on fresh statistics, not on an empty table's (the suite
    truncates the table before each test, which resets Postgres's row estimate)."""
    from sqlalchemy import text

    from service.db import session_scope

    create_dataset(client, admin)
    with session_scope() as session:
        estimate = session.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'samples'"))
    assert estimate == 1797


def test_registering_a_dataset_keeps_no_arrays_in_the_api_process(client, admin, env):
    from ml import datasets

    datasets.clear_cache()
    root = Path(env["data_root"])
    keys = np.array([f"k{i}" for i in range(50)])
    np.savez(root / "big.npz", x=np.zeros((50, 8, 8), "float32"), y=np.arange(50) % 5, keys=keys)
    for i, path in enumerate(["big.npz", "./big.npz", "sub/../big.npz"]):
        (root / "sub").mkdir(exist_ok=True)
        body = {"name": f"big-{i}", "source": {"kind": "npz", "path": path}}
        assert client.post("/v1/datasets", headers=admin, json=body).status_code == 201
    assert len(datasets._CACHE) == 0


def test_dataset_paths_are_confined(client, admin, env, tmp_path):
    root = Path(env["data_root"])
    keys = np.array([f"s{i}" for i in range(20)])
    np.savez(
        root / "ok.npz", x=np.random.rand(20, 4).astype("float32"), y=np.arange(20) % 2, keys=keys
    )
    np.savez(tmp_path / "outside.npz", x=np.zeros((2, 2)), y=np.zeros(2, int), keys=keys[:2])
    for path in ["../outside.npz", str(tmp_path / "outside.npz"), "/etc/passwd", "missing.npz"]:
        response = client.post(
            "/v1/datasets",
            headers=admin,
            json={"name": f"bad-{abs(hash(path))}", "source": {"kind": "npz", "path": path}},
        )
        assert response.status_code == 422, path
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={
            "name": "tv",
            "source": {"kind": "torchvision", "name": "FashionMNIST", "root": "../.."},
        },
    )
    assert response.status_code == 422
    assert client.get("/v1/datasets", headers=admin).json()["items"] == []
    good = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "ok", "source": {"kind": "npz", "path": "ok.npz"}, "holdout_fraction": 0.25},
    )
    assert good.status_code == 201, good.text
    assert good.json()["counts"] == {"train": 15, "holdout": 5, "test": 0}


def test_models_and_versions(client, admin, env):
    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"])
    assert model["status"] == "training" and model["head_version"] is None
    jobs = client.get("/v1/jobs", headers=admin, params={"model_id": model["id"]}).json()["items"]
    assert [(j["kind"], j["status"]) for j in jobs] == [("train", "queued")]
    run_queued_jobs(model["id"])
    model = client.get(f"/v1/models/{model['id']}", headers=admin).json()
    assert model["status"] == "ready" and model["head_version"] == 1
    version = client.get(f"/v1/models/{model['id']}/versions/1", headers=admin).json()
    assert version["kind"] == "trained" and version["parent"] is None
    assert version["metrics"]["ta"] > 0.5 and version["metrics"]["ra"] > 0.5
    job = client.get(f"/v1/jobs/{jobs[0]['id']}", headers=admin).json()
    assert job["status"] == "succeeded" and job["result_version"] == 1 and job["attempts"] == 1
    assert client.get(f"/v1/models/{model['id']}/versions/7", headers=admin).status_code == 404
    assert client.get("/v1/jobs/nope", headers=admin).status_code == 404

    patched = client.patch(
        f"/v1/models/{model['id']}",
        headers=admin,
        json={"unlearner": {"name": "retrain", "params": {}}, "batching": {"max_requests": 5}},
    )
    assert patched.status_code == 200
    assert patched.json()["unlearner"]["name"] == "retrain"
    assert patched.json()["batching"]["max_requests"] == 5
    for bad in [
        {"unlearner": {"name": "nope"}},
        {"unlearner": {"name": "finetune", "params": {"epochs": 0}}},
        {"unlearner": {"name": "finetune", "params": {"bogus": 1}}},
        {"batching": {"max_requests": 0}},
        {"name": "renamed"},
    ]:
        response = client.patch(f"/v1/models/{model['id']}", headers=admin, json=bad)
        assert response.status_code == 422, bad
    for bad in [
        {"architecture": {"name": "nope"}},
        {"architecture": {"name": "mlp", "params": {"hidden": "x"}}},
        {"unlearner": {"name": "unknown"}},
        {"training": {"epochs": -1}},
    ]:
        response = client.post(
            "/v1/models",
            headers=admin,
            json={
                "name": "m2",
                "dataset_id": dataset["id"],
                "architecture": {"name": "mlp"},
                **bad,
            },
        )
        assert response.status_code == 422, bad
    missing = client.post(
        "/v1/models",
        headers=admin,
        json={"name": "m3", "dataset_id": "nope", "architecture": {"name": "mlp"}},
    )
    assert missing.status_code == 404
    duplicate = client.post(
        "/v1/models",
        headers=admin,
        json={"name": model["name"], "dataset_id": dataset["id"], "architecture": {"name": "mlp"}},
    )
    assert duplicate.status_code == 409


def test_upload_and_download_weights(client, admin, env):
    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"], training=None)
    assert model["status"] == "awaiting_upload"
    from ml.architectures import build_model

    network = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10)
    data = save({k: v.contiguous() for k, v in network.state_dict().items()})
    response = client.post(
        f"/v1/models/{model['id']}/versions",
        headers=admin,
        files={"file": ("w.safetensors", io.BytesIO(data))},
    )
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "uploaded" and response.json()["number"] == 1
    download = client.get(f"/v1/models/{model['id']}/versions/1/weights", headers=admin)
    assert download.status_code == 200 and download.content == data
    # An uploaded version is measured like any other, by an evaluate job.
    assert response.json()["metrics"] == {}
    run_queued_jobs(model["id"])
    measured = client.get(f"/v1/models/{model['id']}/versions/1", headers=admin).json()["metrics"]
    assert measured["ua"] is None  # it forgot nothing
    assert 0.0 <= measured["ra"] <= 1.0 and 0.0 <= measured["ta"] <= 1.0

    wrong = build_model("mlp", {"hidden": [32]}, [1, 8, 8], 10)
    for payload in [b"garbage", save({k: v.contiguous() for k, v in wrong.state_dict().items()})]:
        response = client.post(
            f"/v1/models/{model['id']}/versions",
            headers=admin,
            files={"file": ("w.safetensors", io.BytesIO(payload))},
        )
        assert response.status_code == 422
    assert client.get(f"/v1/models/{model['id']}", headers=admin).json()["head_version"] == 1


def test_flush_dispatches_pending(client, admin, ready_model):
    from service.jobs import dispatch

    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": ready_model["id"], "subject_id": "s", "sample_keys": keys},
    )
    assert dispatch.dispatch_model(ready_model["id"]) is None  # policy: not due yet
    flushed = client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    assert flushed.status_code == 202 and flushed.json()["pending_requests"] == 1
    assert dispatch.dispatch_model(ready_model["id"]) is not None
    assert client.post("/v1/models/nope/flush", headers=admin).status_code == 404


def test_out_of_range_values_are_422_not_500(client, admin, ready_model):
    """Found by schemathesis: integers past the database's columns must not reach it."""
    import base64
    import json

    model_id = ready_model["id"]
    for path in [
        f"/v1/models/{model_id}/versions/171502759601177067520",
        f"/v1/models/{model_id}/versions/0/weights",
    ]:
        assert client.get(path, headers=admin).status_code == 422, path
    cursor = base64.urlsafe_b64encode(json.dumps([10**30, 5]).encode()).decode()
    response = client.get(
        f"/v1/datasets/{ready_model['dataset_id']}/samples",
        headers=admin,
        params={"cursor": cursor},
    )
    assert response.status_code == 422
