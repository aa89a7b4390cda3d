"""One request cannot sink its batch: a method's params are checked against the model's
network before they are stored; a class deletion that would leave the model no class is
refused when it is submitted, and one that raced past that check fails alone at batch
time while the others are unlearned."""

from __future__ import annotations

from ml.architectures import structure
from ml.pgu import discover_layers
from service.jobs import dispatch
from tests.helpers.app import run_queued_jobs, train_keys


def _submit(client, admin, model_id: str, body: dict) -> dict:
    response = client.post(
        "/v1/deletion-requests", headers=admin, json={"model_id": model_id, **body}
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_layer_gamma_naming_an_unknown_layer_answers_422_and_stores_nothing(
    client, admin, ready_model
):
    path = f"/v1/models/{ready_model['id']}"
    bad = {"unlearner": {"name": "pgu", "params": {"layer_gamma": {"no.such.layer": 0.5}}}}
    refused = client.patch(path, headers=admin, json=bad)
    assert refused.status_code == 422, refused.text
    assert "no.such.layer" in refused.json()["detail"]
    assert client.get(path, headers=admin).json()["unlearner"]["name"] == "finetune"
    network = structure("mlp", {"hidden": [64]}, [1, 8, 8], 10)
    first = discover_layers(network)[0].module_name
    good = {"unlearner": {"name": "pgu", "params": {"layer_gamma": {first: 1.0}}}}
    assert client.patch(path, headers=admin, json=good).status_code == 200


def test_a_class_deletion_that_would_leave_no_class_is_refused_at_submission(
    client, admin, ready_model
):
    model_id = ready_model["id"]
    lower = _submit(client, admin, model_id, {"subject_id": "a", "class_labels": [0, 1, 2, 3, 4]})
    upper = {"model_id": model_id, "subject_id": "b", "class_labels": [5, 6, 7, 8, 9]}
    refused = client.post("/v1/deletion-requests", headers=admin, json=upper)
    assert refused.status_code == 409, refused.text
    assert "no class" in refused.json()["detail"]
    stored = client.get("/v1/deletion-requests", headers=admin).json()["items"]
    assert [request["id"] for request in stored] == [lower["id"]]
    # Within one bulk call too: the first item claims its classes, the second is refused.
    items = [{**upper, "class_labels": [5, 6]}, {**upper, "class_labels": [7, 8, 9]}]
    bulk = client.post("/v1/deletion-requests:bulk", headers=admin, json={"requests": items}).json()
    assert len(bulk["accepted"]) == 1
    assert [r["index"] for r in bulk["rejected"]] == [1]
    assert bulk["rejected"][0]["problem"]["status"] == 409
    # A cancelled request claims nothing.
    assert client.post(f"/v1/deletion-requests/{lower['id']}/cancel", headers=admin).is_success
    assert client.post("/v1/deletion-requests", headers=admin, json=upper).status_code == 202


def test_a_request_that_would_leave_no_class_fails_alone_and_its_batch_goes_on(
    client, admin, ready_model, monkeypatch
):
    from service.deletion_requests.storage import BatchStorage

    model_id = ready_model["id"]
    lower = _submit(client, admin, model_id, {"subject_id": "a", "class_labels": [0, 1, 2, 3, 4]})
    # Two submissions racing past the submission check, as if neither saw the other.
    with monkeypatch.context() as patched:
        patched.setattr(BatchStorage, "claimed_classes", lambda self, model_id: set())
        upper = _submit(
            client, admin, model_id, {"subject_id": "b", "class_labels": [5, 6, 7, 8, 9]}
        )
    keys = train_keys(client, admin, ready_model["dataset_id"], 3)
    plain = _submit(client, admin, model_id, {"subject_id": "c", "sample_keys": keys})
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    job_id = dispatch.dispatch_model(model_id)
    assert job_id is not None
    job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    assert sorted(job["request_ids"]) == sorted([lower["id"], plain["id"]])
    failed = client.get(f"/v1/deletion-requests/{upper['id']}", headers=admin).json()
    assert failed["status"] == "failed" and "no class" in failed["error"]

    run_queued_jobs(model_id)  # the unlearning and its audit
    for request in (lower, plain):
        done = client.get(f"/v1/deletion-requests/{request['id']}", headers=admin).json()
        assert done["status"] == "completed", done
    # Later, alone, it still cannot be honoured: classes 0-4 are forgotten now.
    retried = client.post(f"/v1/deletion-requests/{upper['id']}/retry", headers=admin)
    assert retried.status_code == 200
    client.post(f"/v1/models/{model_id}/flush", headers=admin)
    assert dispatch.dispatch_model(model_id) is None
    again = client.get(f"/v1/deletion-requests/{upper['id']}", headers=admin).json()
    assert again["status"] == "failed"
