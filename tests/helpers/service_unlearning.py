"""A method through the whole service on digits: a memorising small_cnn at version 1, one
deletion request, the published version 2, and both versions' accuracies on the forget
set, the held-out samples and the test split (read from the stored weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.architectures import build_model
from ml.datasets import open_source
from ml.samples import SampleSet
from ml.training import accuracy
from service.artifacts import store
from service.jobs import dispatch
from tests.helpers.app import DIGITS, create_dataset, create_model, run_queued_jobs, train_keys

__all__ = ["Accuracies", "ServiceRun", "unlearn_through_service", "assert_model_refused"]

SMALL_CNN = {"name": "small_cnn", "params": {"channels": [16, 32], "hidden": 64}}
# Most of digits held out, so that the model trains on about 290 samples and memorises
# them (forget accuracy 1.0, held out several points lower): the gap unlearning must close.
HOLDOUT_FRACTION = 0.8
MEMORISING = {"epochs": 60, "batch_size": 32, "lr": 0.001}
FORGET_SIZE = 50


@dataclass(frozen=True)
class Accuracies:
    forget: float
    holdout: float
    test: float


@dataclass(frozen=True)
class ServiceRun:
    before: Accuracies  # version 1
    after: Accuracies  # version 2, published by the method
    version: dict[str, Any]  # version 2 as the API answers it
    job: dict[str, Any]  # the unlearn job as the API answers it


def _keys(client, headers, dataset_id: str, split: str) -> list[str]:
    response = client.get(
        f"/v1/datasets/{dataset_id}/samples",
        params={"split": split, "limit": 500},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return [item["key"] for item in response.json()["items"]]


def _accuracies(
    sets: dict[str, SampleSet], state: dict[str, torch.Tensor], architecture: dict[str, Any]
) -> Accuracies:
    model = build_model(architecture["name"], architecture["params"], [1, 8, 8], 10)
    model.load_state_dict(state)
    found = {}
    for name, samples in sets.items():
        value = accuracy(model, samples, device=torch.device("cpu"))
        assert value is not None
        found[name] = value
    return Accuracies(**found)


def unlearn_through_service(
    client,
    admin,
    method: str,
    params: dict[str, Any],
    *,
    architecture: dict[str, Any] = SMALL_CNN,
    training: dict[str, Any] = MEMORISING,
    forget_size: int = FORGET_SIZE,
) -> ServiceRun:
    """Train version 1, forget ``forget_size`` training samples with ``method``, measure."""
    # The same version 1 whatever ran before: the worker builds the network from the global
    # generator before seeding its training, and threads change float sums.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "digits", "source": DIGITS, "holdout_fraction": HOLDOUT_FRACTION},
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    model = create_model(
        client,
        admin,
        dataset["id"],
        architecture=architecture,
        training=training,
        unlearner={"name": method, "params": params},
    )
    model_id = model["id"]
    run_queued_jobs(model_id)
    forgotten = train_keys(client, admin, dataset["id"], forget_size)
    response = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model_id, "subject_id": "s", "sample_keys": forgotten},
    )
    assert response.status_code in (201, 202), response.text
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    assert dispatch.dispatch_model(model_id) is not None
    run_queued_jobs(model_id)

    adapter = open_source(DIGITS, Path("."))
    index = adapter.index()
    where = {key: position for position, key in enumerate(index.keys)}

    def samples(keys: list[str]) -> SampleSet:
        positions = np.array([where[k] for k in keys])
        return SampleSet(adapter, positions, index.labels[positions], keys)

    sets = {
        "forget": samples(forgotten),
        "holdout": samples(_keys(client, admin, dataset["id"], "holdout")),
        "test": samples(_keys(client, admin, dataset["id"], "test")),
    }
    versions = f"/v1/models/{model_id}/versions"
    v1, v2 = (client.get(f"{versions}/{n}", headers=admin).json() for n in (1, 2))
    assert v2.get("kind") == "unlearned", v2
    jobs = client.get("/v1/jobs", headers=admin, params={"model_id": model_id}).json()["items"]
    (job,) = [j for j in jobs if j["kind"] == "unlearn"]
    assert job["status"] == "succeeded", job
    run = ServiceRun(
        before=_accuracies(sets, store().get_tensors(v1["artifact_sha256"]), architecture),
        after=_accuracies(sets, store().get_tensors(v2["artifact_sha256"]), architecture),
        version=v2,
        job=job,
    )
    print(f"{method}: v1 {run.before}, v2 {run.after}, timings {job['timings']}")  # on failure
    return run


def assert_model_refused(
    client, headers, architecture: dict[str, Any], unlearner: dict[str, Any]
) -> None:
    """Creating a model with this architecture and unlearner answers 422 and stores none."""
    dataset = create_dataset(client, headers)
    body = {
        "name": "refused",
        "dataset_id": dataset["id"],
        "architecture": architecture,
        "unlearner": unlearner,
    }
    response = client.post("/v1/models", headers=headers, json=body)
    assert response.status_code == 422, response.text
    assert client.get("/v1/models", headers=headers).json()["items"] == []
