"""Models of uploaded weights: an upload that does not fit says which tensors and stores
nothing; a torchvision network exported as the docs say fits; a model may declare the
recipe its uploaded weights were trained with, and is then verified against retrained
references, while one without a recipe is told so at once."""

from __future__ import annotations

import io

import torch
from safetensors.torch import save
from torch import nn

from ml.architectures import build_model
from tests.helpers.app import (
    FAST_TRAINING,
    create_dataset,
    create_model,
    forget_now,
    run_queued_jobs,
    train_keys,
)


def _upload(client, admin, model_id: str, state: dict[str, torch.Tensor]):
    data = save({name: tensor.contiguous() for name, tensor in state.items()})
    return client.post(
        f"/v1/models/{model_id}/versions",
        headers=admin,
        files={"file": ("weights.safetensors", io.BytesIO(data), "application/octet-stream")},
    )


def _nothing_stored(client, admin, model_id: str) -> None:
    model = client.get(f"/v1/models/{model_id}", headers=admin).json()
    assert model["head_version"] is None and model["status"] == "awaiting_upload"
    versions = client.get(f"/v1/models/{model_id}/versions", headers=admin).json()
    assert versions["items"] == []


def test_an_upload_that_does_not_fit_lists_its_tensors(client, admin, env):
    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"], training=None)  # mlp, hidden [64]
    # The mlp's tensors: 1.weight [64, 64], 1.bias [64], 3.weight [10, 64], 3.bias [10].
    state = {
        k: v for k, v in build_model("mlp", {"hidden": [32]}, [1, 8, 8], 10).state_dict().items()
    }
    del state["3.bias"]
    state.update({f"extra.{i:02d}": torch.zeros(i + 1) for i in range(25)})
    response = _upload(client, admin, model["id"], state)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["missing"] == {
        "count": 1,
        "tensors": [{"name": "3.bias", "expected": [10], "got": None}],
    }
    assert problem["mismatched"] == {
        "count": 3,
        "tensors": [
            {"name": "1.weight", "expected": [64, 64], "got": [32, 64]},
            {"name": "1.bias", "expected": [64], "got": [32]},
            {"name": "3.weight", "expected": [10, 64], "got": [10, 32]},
        ],
    }
    unexpected = problem["unexpected"]
    assert unexpected["count"] == 25 and len(unexpected["tensors"]) == 20
    assert unexpected["tensors"][0] == {"name": "extra.00", "expected": None, "got": [1]}
    assert "1 missing, 25 unexpected, 3 mismatched" in problem["detail"]
    assert len(problem["errors"]) == 1 + 20 + 3
    _nothing_stored(client, admin, model["id"])
    fits = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10).state_dict()
    assert _upload(client, admin, model["id"], fits).status_code == 201


def test_a_torchvision_network_exported_as_the_docs_say_fits(client, admin, env):
    """A team trains torchvision's resnet18 with the small stem on 1-channel images, exports
    its state dict, and uploads it; the stock 3-channel resnet18 is refused by name."""
    import torchvision

    dataset = create_dataset(client, admin)
    architecture = {
        "name": "torchvision",
        "params": {"builder": "resnet18", "small_input_stem": True},
    }
    model = create_model(client, admin, dataset["id"], architecture=architecture, training=None)
    theirs = torchvision.models.resnet18(weights=None, num_classes=10)
    response = _upload(client, admin, model["id"], theirs.state_dict())
    assert response.status_code == 422
    assert response.json()["mismatched"]["tensors"] == [
        {"name": "conv1.weight", "expected": [64, 1, 3, 3], "got": [64, 3, 7, 7]}
    ]
    _nothing_stored(client, admin, model["id"])
    theirs.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    theirs.maxpool = nn.Identity()
    response = _upload(client, admin, model["id"], theirs.state_dict())
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "uploaded"


def _forget(client, admin, model: dict, dataset_id: str) -> None:
    """Five training samples forgotten: version 2, its audit run."""
    forget_now(client, admin, model["id"], train_keys(client, admin, dataset_id, 5))


def _jobs(client, admin, model_id: str) -> list[dict]:
    return client.get("/v1/jobs", headers=admin, params={"model_id": model_id}).json()["items"]


def test_an_uploaded_model_with_a_declared_recipe_is_verified_against_references(
    client, admin, env
):
    dataset = create_dataset(client, admin)
    recipe = {**FAST_TRAINING, "epochs": 2, "seed": 7}
    model = create_model(
        client,
        admin,
        dataset["id"],
        training=recipe,
        weights="upload",
        audit={"reference_seeds": 2},
    )
    assert model["status"] == "awaiting_upload"
    assert model["training"]["epochs"] == 2 and model["training"]["seed"] == 7
    assert _jobs(client, admin, model["id"]) == []  # the service trains nothing
    weights = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10).state_dict()
    assert _upload(client, admin, model["id"], weights).status_code == 201
    run_queued_jobs(model["id"])
    _forget(client, admin, model, dataset["id"])

    queued = client.post(
        f"/v1/models/{model['id']}/versions/2/audit", headers=admin, json={"reference": "retrain"}
    )
    assert queued.status_code == 202, queued.text
    run_queued_jobs(model["id"])
    audit = client.get(f"/v1/jobs/{queued.json()['id']}", headers=admin).json()
    assert audit["status"] == "succeeded", audit
    report = client.get(f"/v1/models/{model['id']}/versions/2/audit", headers=admin).json()
    assert report["reference"]["versions"] == [3, 4]
    references = [
        client.get(f"/v1/models/{model['id']}/versions/{n}", headers=admin).json() for n in (3, 4)
    ]
    assert all(v["kind"] == "retrained" and not v["in_lineage"] for v in references)
    # The references record the declared recipe they ran; the uploaded weights record none.
    assert [v["training"]["seed"] for v in references] == [8, 9]
    assert all(v["training"]["epochs"] == 2 for v in references)
    uploaded = client.get(f"/v1/models/{model['id']}/versions/1", headers=admin).json()
    assert uploaded["kind"] == "uploaded" and uploaded["training"] is None
    # A policy with references is accepted: the model has a recipe.
    patched = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"audit": {"reference_every": 2}}
    )
    assert patched.status_code == 200, patched.text


def test_a_model_without_a_recipe_is_told_it_cannot_have_references(client, admin, env):
    dataset = create_dataset(client, admin)
    body = {"name": "no-recipe", "dataset_id": dataset["id"], "architecture": {"name": "mlp"}}
    for refused in (
        {"training": None, "audit": {"reference_every": 1}},
        {"training": None, "audit": {"complete_after": "reference_audit"}},
        {"training": None, "weights": "train"},
        {"weights": "download"},
    ):
        response = client.post("/v1/models", headers=admin, json={**body, **refused})
        assert response.status_code == 422, refused
    assert client.get("/v1/models", headers=admin).json()["items"] == []
    response = client.post(
        "/v1/models", headers=admin, json={**body, "training": None, "weights": "upload"}
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["training"] is None and model["status"] == "awaiting_upload"

    refused = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"audit": {"reference_every": 3}}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "audit", "reference_every"]
    assert "training recipe" in refused.json()["detail"]
    assert (
        client.get(f"/v1/models/{model['id']}", headers=admin).json()["audit"]["reference_every"]
        == 0
    )

    weights = build_model("mlp", {"hidden": [128, 64]}, [1, 8, 8], 10).state_dict()
    assert _upload(client, admin, model["id"], weights).status_code == 201
    run_queued_jobs(model["id"])
    _forget(client, admin, model, dataset["id"])
    before = len(_jobs(client, admin, model["id"]))
    response = client.post(
        f"/v1/models/{model['id']}/versions/2/audit", headers=admin, json={"reference": "retrain"}
    )
    assert response.status_code == 409, response.text
    assert "training recipe" in response.json()["detail"]
    assert len(_jobs(client, admin, model["id"])) == before  # no audit job to fail later
    response = client.post(f"/v1/models/{model['id']}/versions/2/audit", headers=admin, json={})
    assert response.status_code == 202  # an audit without references still runs
