"""RFU-SS through the service: a published version on a memorising digits VIB, 422 on bad
params and on a network without a bottleneck."""

from __future__ import annotations

import pytest

from tests.helpers.app import create_dataset
from tests.helpers.service_unlearning import assert_model_refused, unlearn_through_service

VIB_MLP = {"name": "vib_mlp", "params": {"representer": [64], "z_dim": 16, "approximator": [64]}}
MEMORISING = {"epochs": 40, "batch_size": 32, "lr": 0.003, "beta": 0.001}


def test_rfu_ss_through_the_service_forgets_and_keeps_test_accuracy(client, admin):
    run = unlearn_through_service(
        client,
        admin,
        "rfu_ss",
        {"epochs": 300, "lr": 0.003, "stop": "none"},
        architecture=VIB_MLP,
        training=MEMORISING,
        forget_size=60,
    )
    before, after = run.before, run.after
    assert before.forget > before.holdout  # a gap to close
    assert after.forget < before.forget
    assert abs(after.forget - before.holdout) < abs(before.forget - before.holdout)
    assert after.test >= before.test - 0.03
    assert run.job["unlearner"]["name"] == "rfu_ss"


@pytest.mark.parametrize(
    "params",
    [{"unlearning_rate": -1.0}, {"weighting": "mgda"}, {"lr": 0}, {"epochs": "5"}, {"m": 100}],
)
def test_invalid_params_answer_422_and_store_nothing(client, admin, params):
    assert_model_refused(client, admin, VIB_MLP, {"name": "rfu_ss", "params": params})


def test_rfu_ss_on_a_network_without_a_bottleneck_answers_422_saying_why(client, admin):
    dataset = create_dataset(client, admin)
    body = {
        "name": "plain",
        "dataset_id": dataset["id"],
        "architecture": {"name": "mlp", "params": {"hidden": [32]}},
        "unlearner": {"name": "rfu_ss", "params": {}},
        "training": {"epochs": 1},
    }
    response = client.post("/v1/models", headers=admin, json=body)
    assert response.status_code == 422, response.text
    assert "bottleneck" in response.text and "vib_mlp" in response.text
    assert client.get("/v1/models", headers=admin).json()["items"] == []
    # Switching an existing plain model to rfu_ss is refused the same way, and nothing moves.
    body |= {"unlearner": {"name": "finetune", "params": {}}}
    model = client.post("/v1/models", headers=admin, json=body).json()
    response = client.patch(
        f"/v1/models/{model['id']}", headers=admin, json={"unlearner": {"name": "rfu_ss"}}
    )
    assert response.status_code == 422 and "bottleneck" in response.text
    stored = client.get(f"/v1/models/{model['id']}", headers=admin).json()
    assert stored["unlearner"]["name"] == "finetune"
