"""PGU through the service: a cache job after version 1, then incremental batches whose
caches are exact downdates of the first one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ml.architectures import build_model
from ml.datasets import open_source
from ml.pgu import input_covariances
from ml.samples import SampleSet
from service.artifacts import store
from service.jobs import dispatch
from tests.helpers.app import configure, create_dataset, create_model, run_queued_jobs, train_keys

SMALL_CNN = {"name": "small_cnn", "params": {"channels": [8, 16], "hidden": 32}}


def _forget(client, admin, model_id, keys):
    client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model_id, "subject_id": "s", "sample_keys": keys},
    )
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    assert dispatch.dispatch_model(model_id) is not None
    run_queued_jobs(model_id)


def _cache(version: dict) -> tuple[dict[str, torch.Tensor], dict]:
    (artifact,) = [a for a in version["artifacts"] if a["name"] == "pgu_cache"]
    return store().get_tensors(artifact["sha256"]), artifact["meta"]


def test_incremental_caches_through_the_service(client, admin, env):
    dataset = create_dataset(client, admin)
    model = create_model(
        client,
        admin,
        dataset["id"],
        architecture=SMALL_CNN,
        unlearner={"name": "pgu", "params": {"max_steps": 10}},
    )
    model_id = model["id"]
    ran = run_queued_jobs(model_id)
    jobs = client.get("/v1/jobs", headers=admin, params={"model_id": model_id}).json()["items"]
    assert sorted(j["kind"] for j in jobs) == ["cache", "train"] and len(ran) == 2
    versions = f"/v1/models/{model_id}/versions"
    v1 = client.get(f"{versions}/1", headers=admin).json()
    v1_cache, v1_meta = _cache(v1)
    v1_sha = v1["artifacts"][0]["sha256"]
    assert v1_meta["basis_version"] == 1

    keys = train_keys(client, admin, dataset["id"], 40)
    _forget(client, admin, model_id, keys[:20])
    v2 = client.get(f"{versions}/2", headers=admin).json()
    v2_cache, v2_meta = _cache(v2)
    _forget(client, admin, model_id, keys[20:])
    v3 = client.get(f"{versions}/3", headers=admin).json()
    assert v2["parent"] == 1 and v3["parent"] == 2 and v3["kind"] == "unlearned"
    v3_cache, v3_meta = _cache(v3)
    assert v2_meta["basis_version"] == v3_meta["basis_version"] == 1
    assert v2["artifacts"][0]["sha256"] != v3["artifacts"][0]["sha256"]

    # Only the head's cache is kept: the older ones (~80 MB each on 28x28 images) are
    # collected, rows and files, once no live job reads their versions.
    for number, old in ((1, v1_sha), (2, v2["artifacts"][0]["sha256"])):
        assert client.get(f"{versions}/{number}", headers=admin).json()["artifacts"] == []
        assert not store().path(old).exists()
    assert store().path(v3["artifacts"][0]["sha256"]).exists()
    unlearn_jobs = [
        j
        for j in client.get("/v1/jobs", headers=admin, params={"model_id": model_id}).json()[
            "items"
        ]
        if j["kind"] == "unlearn"
    ]
    assert all(j["status"] == "succeeded" for j in unlearn_jobs) and len(unlearn_jobs) == 2
    assert all({"cache_update", "unlearning"} <= set(j["timings"]) for j in unlearn_jobs)
    assert not any(
        j["kind"] == "cache" and j["base_version"] in (2, 3)
        for j in client.get("/v1/jobs", headers=admin, params={"model_id": model_id}).json()[
            "items"
        ]
    ), "unlearned versions bring their own cache"

    # v3's cache = v1's minus both forget sets, represented by the basis version (v1).
    basis = build_model("small_cnn", SMALL_CNN["params"], [1, 8, 8], 10)
    basis.load_state_dict(
        store().get_tensors(client.get(f"{versions}/1", headers=admin).json()["artifact_sha256"])
    )
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    index = adapter.index()
    positions = np.array([index.keys.index(k) for k in keys])
    forgotten = SampleSet(adapter, positions, index.labels[positions], keys)
    removed = input_covariances(basis, forgotten, batch_size=16, device=torch.device("cpu"))
    # Beside each layer's C, a cache keeps its samples' key hashes: v3's lost the 40 forgotten.
    v1_members, v3_members = v1_cache.pop("members"), v3_cache.pop("members")
    assert len(v1_members) - len(v3_members) == len(keys)
    assert set(v3_cache) == set(v1_cache) == set(removed)
    for name, covariance in v1_cache.items():
        expected = covariance - removed[name]
        error = torch.linalg.norm(v3_cache[name] - expected) / torch.linalg.norm(expected)
        assert error < 1e-9, (name, float(error))


def test_a_network_whose_cache_exceeds_the_bound_is_refused_with_its_size(
    client, admin, monkeypatch
):
    """ResNet-18's cache is 704 MiB per version: refused (422, nothing stored) on create and
    on a switch to pgu while UNLEARN_MAX_CACHE_MB is below it, accepted at the default."""
    dataset = create_dataset(client, admin)
    resnet = {"name": "torchvision", "params": {"builder": "resnet18", "small_input_stem": True}}
    body = {"name": "big", "dataset_id": dataset["id"], "architecture": resnet}
    configure(monkeypatch, max_cache_mb=500)
    refused = client.post("/v1/models", headers=admin, json=body | {"unlearner": {"name": "pgu"}})
    assert refused.status_code == 422, refused.text
    assert "704 MiB cache per version" in refused.json()["detail"]
    assert "UNLEARN_MAX_CACHE_MB allows 500" in refused.json()["detail"]
    assert client.get("/v1/models", headers=admin).json()["items"] == []
    model = create_model(client, admin, dataset["id"], architecture=resnet, training=None)
    switched = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"unlearner": {"name": "pgu"}}
    )
    assert switched.status_code == 422 and "UNLEARN_MAX_CACHE_MB" in switched.text
    # Discovery says the same before anyone tries: torchvision (resnet18 by default) is
    # unsuitable for pgu under this limit, and suitable again above it.
    pgu = _discovered(client, admin, "pgu")
    assert {u["architecture"]: u["reason"] for u in pgu["unsuitable_for"]}["torchvision"] == (
        "it keeps a 704 MiB cache per version for this network and needs about three times "
        "that in memory per deletion; UNLEARN_MAX_CACHE_MB allows 500"
    )
    configure(monkeypatch, max_cache_mb=2048)
    assert _discovered(client, admin, "pgu")["unsuitable_for"] == []
    switched = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"unlearner": {"name": "pgu"}}
    )
    assert switched.status_code == 200, switched.text


def _discovered(client, headers, method: str) -> dict:
    listed = client.get("/v1/unlearners", headers=headers).json()["items"]
    return next(item for item in listed if item["name"] == method)
