"""Bring your own network, through the API: torchvision networks by builder name (created,
or refused with the reason and nothing stored), a plug-in's network trained and unlearned
by the service, and the discovery endpoints that list what is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.app import configure, create_dataset
from tests.helpers.service_unlearning import unlearn_through_service


def _rgb_dataset(client, admin, data_root: str) -> dict:
    """40 random 3x32x32 images in 10 classes (an npz file under the data root)."""
    rng = np.random.default_rng(0)
    np.savez(
        Path(data_root) / "rgb32.npz",
        x=rng.random((40, 3, 32, 32), dtype=np.float32),
        y=np.arange(40) % 10,
        keys=np.array([f"img{i}" for i in range(40)]),
    )
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "rgb32", "source": {"kind": "npz", "path": "rgb32.npz"}},
    )
    assert response.status_code == 201, response.text
    assert response.json()["input_shape"] == [3, 32, 32]
    return response.json()


def _create(client, admin, dataset: dict, name: str, params: dict, unlearner: str = "finetune"):
    return client.post(
        "/v1/models",
        headers=admin,
        json={
            "name": name,
            "dataset_id": dataset["id"],
            "architecture": {"name": "torchvision", "params": params},
            "unlearner": {"name": unlearner},
        },
    )


def _refused(response, *fragments: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["loc"][:2] in (["body", "architecture"], ["body", "unlearner"])
    for fragment in fragments:
        assert fragment in problem["detail"], problem["detail"]


def test_torchvision_networks_are_created_or_refused_with_the_reason(
    client, admin, env, monkeypatch
):
    digits = create_dataset(client, admin)  # 1x8x8
    rgb = _rgb_dataset(client, admin, env["data_root"])
    created = _create(
        client, admin, digits, "resnet", {"builder": "resnet18", "small_input_stem": True}
    )
    assert created.status_code == 201, created.text
    assert created.json()["architecture"] == {
        "name": "torchvision",
        "params": {"builder": "resnet18", "small_input_stem": True, "vib": None},
    }
    assert created.json()["status"] == "training"

    _refused(_create(client, admin, digits, "vit", {"builder": "vit_b_16"}), "multiple of 16")
    _refused(
        _create(client, admin, digits, "cnx", {"builder": "convnext_tiny"}), "cannot take inputs"
    )
    _refused(
        _create(client, admin, digits, "x", {"builder": "resnet19"}), "unknown torchvision builder"
    )
    _refused(_create(client, admin, digits, "x", {"builder": "squeezenet1_1"}), "not supported")
    _refused(
        _create(
            client, admin, digits, "x", {"builder": "mobilenet_v3_small", "small_input_stem": True}
        ),
        "small_input_stem",
    )
    # vit_b_16 has 85 million parameters: over the default bound of 50 million.
    _refused(
        _create(client, admin, rgb, "vit", {"builder": "vit_b_16"}), "parameters on this dataset"
    )
    configure(monkeypatch, max_model_parameters=100_000_000)
    _refused(
        _create(client, admin, rgb, "vit", {"builder": "vit_b_16"}, unlearner="pgu"),
        "nn.MultiheadAttention",
    )
    vit = _create(client, admin, rgb, "vit", {"builder": "vit_b_16"})
    assert vit.status_code == 201, vit.text
    names = {model["name"] for model in client.get("/v1/models", headers=admin).json()["items"]}
    assert names == {"resnet", "vit"}  # every refusal stored nothing


def test_a_plugin_network_trains_and_unlearns_through_the_service(client, admin, example_plugin):
    architecture = {"name": "tiny_convnet", "params": {"channels": [16, 32]}}
    run = unlearn_through_service(
        client,
        admin,
        "finetune",
        {"epochs": 2},
        architecture=architecture,
        training={"epochs": 30, "batch_size": 32, "lr": 0.01},
        forget_size=20,
    )
    assert run.job["status"] == "succeeded" and run.version["parent"] == 1
    assert run.before.test > 0.5  # version 1 learned digits
    assert run.after.test > 0.5  # and fine-tuning kept it


def test_discovery_lists_architectures_and_unlearners(client, key_for):
    reader = key_for(["requests:write"])  # any valid key
    for path in ("/v1/architectures", "/v1/unlearners"):
        assert client.get(path).status_code == 401
    response = client.get("/v1/architectures", headers=reader)
    assert response.status_code == 200, response.text
    found = {item["name"]: item for item in response.json()["items"]}
    assert set(found) == {"mlp", "small_cnn", "vib_mlp", "vib_cnn", "torchvision"}
    assert {item["source"] for item in found.values()} == {"built-in"}
    torchvision = found["torchvision"]
    assert torchvision["defaults"] == {
        "builder": "resnet18",
        "small_input_stem": False,
        "vib": None,
    }
    builder = torchvision["params_schema"]["properties"]["builder"]
    assert {"resnet18", "mobilenet_v3_large", "vit_b_16"} <= set(builder["enum"])
    assert not any(name.startswith(("squeezenet", "regnet")) for name in builder["enum"])
    assert torchvision["params_schema"]["additionalProperties"] is False
    hidden = found["mlp"]["params_schema"]["properties"]["hidden"]
    assert (hidden["items"]["minimum"], hidden["items"]["maximum"]) == (1, 4096)

    response = client.get("/v1/unlearners", headers=reader)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["representative_input"] == {"input_shape": [1, 28, 28], "num_classes": 10}
    methods = {item["name"]: item for item in body["items"]}
    assert {"pgu", "finetune", "retrain", "rfu_ss"} <= set(methods)
    assert methods["pgu"]["needs"] == ["cache", "validation"]
    assert methods["pgu"]["unsuitable_for"] == []  # resnet18 at the defaults: no attention
    assert methods["finetune"]["defaults"]["epochs"] >= 1
    assert methods["finetune"]["params_schema"]["properties"]["epochs"]["minimum"] == 1
    refused = {u["architecture"]: u["reason"] for u in methods["rfu_ss"]["unsuitable_for"]}
    assert set(refused) == {"mlp", "small_cnn", "torchvision"}
    assert all("bottleneck" in reason for reason in refused.values())


def test_discovery_lists_plugins(client, key_for, example_plugin):
    reader = key_for(["models:read"])
    found = {i["name"]: i for i in client.get("/v1/architectures", headers=reader).json()["items"]}
    assert found["tiny_convnet"]["source"] == "plug-in unlearnd-example-plugin 0.1.0"
    assert found["tiny_convnet"]["defaults"] == {"channels": [8, 16]}
    methods = {i["name"]: i for i in client.get("/v1/unlearners", headers=reader).json()["items"]}
    assert "tiny_convnet" in {u["architecture"] for u in methods["rfu_ss"]["unsuitable_for"]}


def test_the_openapi_document_describes_discovery(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/architectures", "/v1/unlearners"):
        responses = paths[path]["get"]["responses"]
        assert {"200", "401", "429", "503"} <= set(responses), path
