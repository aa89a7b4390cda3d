"""One deletion batch through the service on digits, and the accuracies of the version it
publishes against its parent: on the forget set, the held-out samples and the test split.

80% of digits' training split is held out, so version 1 trains on about 290 samples and
memorises them: its forget accuracy exceeds its held-out accuracy by several points, the
gap a method must close (on all of digits the gap is one or two samples)."""

from __future__ import annotations

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
from tests.conftest import DIGITS, create_model, run_queued_jobs, train_keys

__all__ = ["unlearn_once"]

DEVICE = torch.device("cpu")
HOLDOUT_FRACTION = 0.8


def _keys(client, admin, dataset_id: str, split: str) -> list[str]:
    response = client.get(
        f"/v1/datasets/{dataset_id}/samples",
        headers=admin,
        params={"split": split, "limit": 500},
    )
    assert response.status_code == 200, response.text
    return [item["key"] for item in response.json()["items"]]


def _samples(keys: list[str]) -> SampleSet:
    adapter = open_source(DIGITS, Path("."))
    index = adapter.index()
    where = {key: i for i, key in enumerate(index.keys)}
    positions = np.array([where[k] for k in keys])
    return SampleSet(adapter, positions, index.labels[positions], keys)


def _accuracies(client, admin, model: dict, number: int, sets: dict[str, SampleSet]) -> dict:
    version = client.get(f"/v1/models/{model['id']}/versions/{number}", headers=admin).json()
    architecture = model["architecture"]
    network = build_model(architecture["name"], architecture["params"], [1, 8, 8], 10)
    network.load_state_dict(store().get_tensors(version["artifact_sha256"]))
    return {name: accuracy(network, samples, device=DEVICE) for name, samples in sets.items()}


def unlearn_once(
    client,
    admin,
    *,
    architecture: dict[str, Any],
    unlearner: dict[str, Any],
    training: dict[str, Any],
    forget_size: int,
) -> tuple[dict[str, float], dict[str, float], dict]:
    """(accuracies of version 1, of version 2, version 2) after forgetting the first
    ``forget_size`` training samples with ``unlearner``."""
    torch.set_num_threads(1)  # the test machine's cores are shared
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
        unlearner=unlearner,
        training=training,
    )
    run_queued_jobs(model["id"])
    keys = train_keys(client, admin, dataset["id"], forget_size)
    response = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model["id"], "subject_id": "s", "sample_keys": keys},
    )
    assert response.status_code == 202, response.text
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    assert dispatch.dispatch_model(model["id"]) is not None
    run_queued_jobs(model["id"])
    version = client.get(f"/v1/models/{model['id']}/versions/2", headers=admin).json()
    assert version["kind"] == "unlearned", version
    sets = {
        "forget": _samples(keys),
        "holdout": _samples(_keys(client, admin, dataset["id"], "holdout")),
        "test": _samples(_keys(client, admin, dataset["id"], "test")),
    }
    before = _accuracies(client, admin, model, 1, sets)
    after = _accuracies(client, admin, model, 2, sets)
    return before, after, version
