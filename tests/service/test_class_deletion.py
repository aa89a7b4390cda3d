"""Class deletion through the service: the forgotten classes are never predicted again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.architectures import build_model
from ml.datasets import open_source
from service.artifacts import store
from service.jobs import dispatch
from tests.helpers.app import create_dataset, create_model, run_queued_jobs


def _predictions(client, admin, model_id: str, number: int) -> torch.Tensor:
    version = client.get(f"/v1/models/{model_id}/versions/{number}", headers=admin).json()
    network = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10)
    network.load_state_dict(store().get_tensors(version["artifact_sha256"]))
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    inputs = adapter.read(np.arange(len(adapter.index().keys)))
    with torch.no_grad():
        return network.eval()(inputs).argmax(1)


@pytest.mark.parametrize(
    "unlearner",
    [{"name": "finetune", "params": {"epochs": 1}}, {"name": "pgu", "params": {"max_steps": 20}}],
    ids=["finetune", "pgu"],
)
def test_forgotten_classes_are_never_predicted(client, admin, env, unlearner):
    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"], unlearner=unlearner)
    run_queued_jobs(model["id"])
    assert (_predictions(client, admin, model["id"], 1) == 3).any()

    response = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model["id"], "subject_id": "class-3", "class_labels": [3]},
    )
    assert response.status_code == 202, response.text
    assert response.json()["sample_count"] > 100
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    dispatch.dispatch_model(model["id"])
    run_queued_jobs(model["id"])
    request = client.get(f"/v1/deletion-requests/{response.json()['id']}", headers=admin).json()
    assert request["status"] == "completed", request
    version = client.get(f"/v1/models/{model['id']}/versions/2", headers=admin).json()
    assert version["forgotten_samples"] == request["sample_count"]
    assert version["metrics"]["ua"] == 1.0 and version["metrics"]["ta"] > 0.5
    assert not (_predictions(client, admin, model["id"], 2) == 3).any()

    # A later batch (sample keys) keeps class 3 masked.
    keys = [
        s["key"]
        for s in client.get(
            f"/v1/datasets/{dataset['id']}/samples",
            headers=admin,
            params={"split": "train", "state": "active", "limit": 5},
        ).json()["items"]
    ]
    client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model["id"], "subject_id": "u", "sample_keys": keys},
    )
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    dispatch.dispatch_model(model["id"])
    run_queued_jobs(model["id"])
    assert not (_predictions(client, admin, model["id"], 3) == 3).any()
