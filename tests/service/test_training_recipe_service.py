"""The training recipe through the API: options out of bounds answer 422 and store
nothing, augmentation is refused for samples that are not images, and every version the
service trains records the recipe it ran (version 1, a fine-tuning, retrained references),
the same recipe and seed giving the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.jobs import dispatch
from tests.helpers.app import (
    FAST_TRAINING,
    create_dataset,
    create_model,
    run_queued_jobs,
    train_keys,
)

# A ResNet-style recipe, shrunk to the digits: every option on.
RECIPE = {
    **FAST_TRAINING,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "augment": {"random_crop_padding": 1, "horizontal_flip": False},
    "grad_clip_norm": 5.0,
    "mixed_precision": "bf16",
    "seed": 11,
}


def _post_model(client, admin, dataset_id: str, training: object):
    return client.post(
        "/v1/models",
        headers=admin,
        json={
            "name": "recipe",
            "dataset_id": dataset_id,
            "architecture": {"name": "mlp", "params": {"hidden": [32]}},
            "training": training,
        },
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"schedule": "linear"},
        {"optimizer": "lamb"},
        {"warmup_epochs": 3},  # FAST_TRAINING has 3 epochs
        {"schedule": "step", "step_size": 30},
        {"step_gamma": 2},
        {"label_smoothing": 1},
        {"augment": {"random_crop_padding": 1000}},
        {"augment": {"rotate": 10}},
        {"augment": "flip"},
        {"grad_clip_norm": 0},
        {"grad_clip_norm": 1e308},
        {"mixed_precision": "fp16"},
    ],
)
def test_a_recipe_out_of_bounds_answers_422_and_stores_nothing(client, admin, env, bad):
    dataset = create_dataset(client, admin)
    response = _post_model(client, admin, dataset["id"], {**FAST_TRAINING, **bad})
    assert response.status_code == 422, response.text
    assert client.get("/v1/models", headers=admin).json()["items"] == []


def test_augmentation_is_refused_for_samples_that_are_not_images(client, admin, env):
    np.savez(
        Path(env["data_root"]) / "flat.npz",
        x=np.random.default_rng(0).random((20, 4), dtype=np.float32),
        y=np.arange(20) % 2,
        keys=np.array([f"row{i}" for i in range(20)]),
    )
    flat = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "flat", "source": {"kind": "npz", "path": "flat.npz"}},
    ).json()
    augmented = {**FAST_TRAINING, "augment": {"horizontal_flip": True}}
    response = _post_model(client, admin, flat["id"], augmented)
    assert response.status_code == 422, response.text
    assert "(C, H, W)" in response.json()["detail"]
    assert client.get("/v1/models", headers=admin).json()["items"] == []
    assert _post_model(client, admin, flat["id"], FAST_TRAINING).status_code == 201


def _version(client, admin, model_id: str, number: int) -> dict:
    response = client.get(f"/v1/models/{model_id}/versions/{number}", headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_trained_version_records_the_recipe_it_ran(client, admin, env):
    dataset = create_dataset(client, admin)
    model = create_model(
        client,
        admin,
        dataset["id"],
        training=RECIPE,
        unlearner={"name": "finetune", "params": {"epochs": 1, "lr": 0.02}},
        audit={"reference_seeds": 2},
    )
    assert model["training"] == {**model["training"], **RECIPE}  # stored as given
    run_queued_jobs(model["id"])
    first = _version(client, admin, model["id"], 1)
    # On this CPU worker bf16 is a no-op, and the version says what ran.
    assert first["training"] == {**model["training"], "mixed_precision": "none"}

    # The same recipe and seed train the same weights, augmentation included.
    twin = create_model(client, admin, dataset["id"], training=RECIPE)
    run_queued_jobs(twin["id"])
    assert _version(client, admin, twin["id"], 1)["artifact_sha256"] == first["artifact_sha256"]

    keys = train_keys(client, admin, dataset["id"], 10)
    body = {"model_id": model["id"], "subject_id": "s", "sample_keys": keys}
    assert client.post("/v1/deletion-requests", headers=admin, json=body).status_code == 202
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    job_id = dispatch.dispatch_model(model["id"])
    run_queued_jobs(model["id"])
    job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    tuned = _version(client, admin, model["id"], 2)["training"]
    assert tuned == {
        **first["training"],
        "optimizer": "sgd",
        "epochs": 1,
        "lr": 0.02,
        "batch_size": 128,
        "seed": job["seed"],
        "schedule": "constant",
        "warmup_epochs": 0,
    }

    queued = client.post(
        f"/v1/models/{model['id']}/versions/2/audit", headers=admin, json={"reference": "retrain"}
    )
    assert queued.status_code == 202, queued.text
    run_queued_jobs(model["id"])
    report = client.get(f"/v1/models/{model['id']}/versions/2/audit", headers=admin).json()
    references = [_version(client, admin, model["id"], n) for n in report["reference"]["versions"]]
    assert [v["training"] for v in references] == [
        {**first["training"], "seed": RECIPE["seed"] + 1},
        {**first["training"], "seed": RECIPE["seed"] + 2},
    ]
