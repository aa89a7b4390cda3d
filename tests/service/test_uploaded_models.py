"""Models of uploaded weights: an upload that does not fit says which tensors and stores
nothing; a torchvision network exported as the docs say fits."""

from __future__ import annotations

import io

import torch
from safetensors.torch import save
from torch import nn

from ml.architectures import build_model
from tests.helpers.app import (
    create_dataset,
    create_model,
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
