"""Input an attacker or a careless client sends: every answer is a problem+json 4xx, and a
refused call changes nothing (issue 10's reproductions, on Postgres and on SQLite)."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import func, select

from service.db import session_scope
from service.tables import DeletionRequest
from tests.helpers.app import make_key, train_keys

PROBLEM = "application/problem+json"


def _cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


def post_json(client: TestClient, path: str, headers: dict[str, str], body: object):
    """POST ``body`` as JSON with ASCII escapes, as a client sends a lone surrogate."""
    data = json.dumps(body, ensure_ascii=True)
    return client.post(path, headers={**headers, "Content-Type": "application/json"}, content=data)


def _stored_requests() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(DeletionRequest)) or 0


@pytest.fixture(params=["postgres", "sqlite"])
def any_backend(request, monkeypatch, tmp_path) -> tuple[TestClient, dict[str, str]]:
    """The same client on Postgres and on the embedded SQLite default."""
    from service.app import create_app

    request.getfixturevalue("env" if request.param == "postgres" else "sqlite_env")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, make_key(["admin"])


LISTS = [
    "/v1/models",
    "/v1/datasets",
    "/v1/deletion-requests",
    "/v1/jobs",
    "/v1/keys",
]


@pytest.mark.parametrize(
    "values",
    [[123, "x"], ["abc", "def"], ["2024-01-01T00:00:00", "x"], [True, 1], [[1], {}], [1, 2, 3]],
)
def test_cursors_of_the_wrong_types_are_422(any_backend, values):
    client, admin = any_backend
    dataset = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "d", "source": {"kind": "builtin", "name": "sklearn-digits"}},
    ).json()
    paths = [*LISTS, f"/v1/datasets/{dataset['id']}/samples"]
    for path in paths:
        for cursor in (_cursor(values), "%%%", "W" * 600, _cursor([[[[[]]]]]) * 1, "[" * 300):
            response = client.get(path, headers=admin, params={"cursor": cursor})
            body = assert_problem(response, 422)
            assert body["errors"][0]["loc"][-1] == "cursor", (path, cursor)


def test_text_no_database_can_hold_is_422(any_backend):
    client, admin = any_backend
    dataset = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "d", "source": {"kind": "builtin", "name": "sklearn-digits"}},
    ).json()
    for body in [
        {"model_id": "m", "subject_id": "s", "sample_keys": ["\udfff"]},
        {"model_id": "m", "subject_id": "a\x00b", "sample_keys": ["k"]},
        {"model_id": "\ud800", "subject_id": "s", "sample_keys": ["k"]},
    ]:
        assert_problem(post_json(client, "/v1/deletion-requests", admin, body), 422)
    for source in [
        {"kind": "npz", "path": "a\x00b.npz"},
        {"kind": "torchvision", "name": "MNIST", "root": "x\x00"},
    ]:
        response = post_json(client, "/v1/datasets", admin, {"name": "n", "source": source})
        assert_problem(response, 422)
    # A key of the client's own, echoed in the problem's location, escaped.
    response = post_json(client, "/v1/datasets", admin, {"name": "n", "\udfff": 1})
    assert_problem(response, 422)
    # NUL in a path or query parameter: unknown, never a driver error.
    for path in [f"/v1/datasets/{dataset['id']}/samples/a%00b", "/v1/models/a%00b"]:
        assert client.get(path, headers=admin).status_code in (404, 422)
    response = client.get("/v1/deletion-requests", headers=admin, params={"subject_id": "a\x00"})
    assert response.status_code in (200, 422)


@pytest.mark.parametrize(
    "architecture",
    [
        {"name": "mlp", "params": {"hidden": [-1]}},
        {"name": "mlp", "params": {"hidden": [0]}},
        {"name": "mlp", "params": {"hidden": [10**12]}},
        {"name": "small_cnn", "params": {"channels": [1, 99999999999]}},
        {"name": "small_cnn", "params": {"channels": [0, 4]}},
        {"name": "small_cnn", "params": {"hidden": 8, "channels": [1024, 1024]}},
        {"name": "mlp", "params": {"hidden": [4096] * 8}},  # over the parameter budget
    ],
)
def test_architecture_params_out_of_range_are_422(client, admin, architecture, monkeypatch):
    from tests.helpers.app import configure, create_dataset

    configure(monkeypatch, max_model_parameters=1_000_000)
    dataset = create_dataset(client, admin)
    response = client.post(
        "/v1/models",
        headers=admin,
        json={"name": "m", "dataset_id": dataset["id"], "architecture": architecture},
    )
    assert_problem(response, 422)
    assert client.get("/v1/models", headers=admin).json()["items"] == []


def test_dataset_seed_beyond_the_column_is_422(any_backend):
    client, admin = any_backend
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={
            "name": "d",
            "seed": 2**63 + 5,
            "source": {"kind": "builtin", "name": "sklearn-digits"},
        },
    )
    assert_problem(response, 422)


def _npz(path: Path, **arrays) -> None:
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def test_broken_npz_files_are_422(any_backend, tmp_path):
    client, admin = any_backend
    root = Path(os.environ["UNLEARN_DATA_ROOT"])
    keys = np.array([f"k{i}" for i in range(4)])
    x = np.zeros((4, 2), dtype="float32")
    (root / "empty.npz").write_bytes(b"")
    (root / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "plain.npy").write_bytes(b"\x93NUMPY")
    _npz(root / "huge-labels.npz", x=x, y=np.array([0, 1, 2, 2**40]), keys=keys)
    _npz(root / "negative.npz", x=x, y=np.array([0, -1, 1, 1]), keys=keys)
    _npz(root / "strings.npz", x=np.array([["a", "b"]] * 4), y=np.arange(4), keys=keys)
    _npz(root / "nan.npz", x=np.full((4, 2), np.nan), y=np.arange(4), keys=keys)
    _npz(root / "long-keys.npz", x=x, y=np.arange(4), keys=np.array(["k" * 300] * 4))
    _npz(root / "scalar.npz", x=np.float32(1), y=np.arange(4), keys=keys)
    os.mkfifo(root / "fifo.npz")
    (root / "folder.npz").mkdir()
    names = [
        "empty.npz",
        "garbage.npz",
        "plain.npy",
        "huge-labels.npz",
        "negative.npz",
        "strings.npz",
        "nan.npz",
        "long-keys.npz",
        "scalar.npz",
        "fifo.npz",  # would block a request thread forever if opened
        "folder.npz",
    ]
    for name in names:
        response = client.post(
            "/v1/datasets",
            headers=admin,
            json={"name": name, "source": {"kind": "npz", "path": name}},
        )
        assert_problem(response, 422)
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "tv", "source": {"kind": "torchvision", "name": "MNIST", "root": "fifo.npz"}},
    )
    assert_problem(response, 422)
    assert client.get("/v1/datasets", headers=admin).json()["items"] == []


def test_an_npy_file_registered_as_npz_is_422_naming_the_problem(client, admin):
    root = Path(os.environ["UNLEARN_DATA_ROOT"])
    np.save(root / "x.npy", np.zeros((4, 2), dtype="float32"))
    for path in ("x.npy", str(root / "x.npy")):
        response = client.post(
            "/v1/datasets",
            headers=admin,
            json={"name": "d", "source": {"kind": "npz", "path": path}},
        )
        assert_problem(response, 422)
        assert "single .npy array, not an npz archive" in response.json()["detail"]
        assert str(root) not in response.text
    assert client.get("/v1/datasets", headers=admin).json()["items"] == []


def test_dataset_errors_never_echo_the_data_root(client, admin):
    root = Path(os.environ["UNLEARN_DATA_ROOT"])
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    for source in [
        {"kind": "torchvision", "name": "MNIST", "root": "."},  # no MNIST files there
        {"kind": "npz", "path": "loop1"},  # was a 500 (Path.resolve's RuntimeError)
        {"kind": "npz", "path": str(root / "absent.npz")},
    ]:
        response = client.post("/v1/datasets", headers=admin, json={"name": "d", "source": source})
        assert_problem(response, 422)
        assert str(root) not in response.text, response.text


def test_bulk_stores_nothing_it_does_not_accept(any_backend):
    client, admin = any_backend
    from tests.helpers.app import create_dataset, create_model

    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"], training=None)
    keys = train_keys(client, admin, dataset["id"], 2)
    good = {"model_id": model["id"], "subject_id": "s", "sample_keys": keys[:1]}
    bad = [
        {"model_id": model["id"], "subject_id": "a\x00", "sample_keys": keys[1:]},
        {"model_id": model["id"], "subject_id": "s", "sample_keys": ["\udfff"]},
        {"model_id": model["id"], "subject_id": "s", "class_labels": [2**40]},
    ]
    bulk = {**admin, "Idempotency-Key": "bulk-1"}
    response = post_json(client, "/v1/deletion-requests:bulk", bulk, {"requests": [good, *bad]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["accepted"]) == 1
    assert [r["index"] for r in answer["rejected"]] == [1, 2, 3]
    assert all(r["problem"]["status"] == 422 for r in answer["rejected"])
    assert _stored_requests() == 1
    # The same call again (a client retrying after a timeout) stores nothing twice.
    again = post_json(client, "/v1/deletion-requests:bulk", bulk, {"requests": [good, *bad]}).json()
    assert again["accepted"][0]["id"] == answer["accepted"][0]["id"]
    assert _stored_requests() == 1


def test_undecodable_bodies_are_422(client, admin):
    for content_type, body in [
        ("application/json", b'{"name": "\xff\xfe"}'),
        ("application/json", b"\xc3\x28"),
        ("application/json", b'{"name": '),
    ]:
        response = client.post(
            "/v1/datasets", headers={**admin, "Content-Type": content_type}, content=body
        )
        assert_problem(response, 422)
    response = client.post(
        "/v1/models/m/versions",
        headers={**admin, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
    )
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"] == PROBLEM


def test_uploaded_weights_must_be_finite(client, admin, ready_model):
    from service.models.settings import ModelSettings
    from service.tables import Model

    with session_scope() as session:
        network = ModelSettings.of(session.get(Model, ready_model["id"])).architecture.build(
            ready_model["dataset"]["input_shape"], ready_model["dataset"]["num_classes"]
        )
    for poison in (float("nan"), float("inf")):
        state = {k: v.clone() for k, v in network.state_dict().items()}
        first = next(iter(state))
        state[first].view(-1)[0] = poison
        response = client.post(
            f"/v1/models/{ready_model['id']}/versions",
            headers=admin,
            files={"file": ("w.safetensors", io.BytesIO(save(state)), "application/octet-stream")},
        )
        assert_problem(response, 422)
    model = client.get(f"/v1/models/{ready_model['id']}", headers=admin).json()
    assert model["head_version"] == 1
    state = {k: torch.zeros_like(v) for k, v in network.state_dict().items()}
    response = client.post(
        f"/v1/models/{ready_model['id']}/versions",
        headers=admin,
        files={"file": ("w.safetensors", io.BytesIO(save(state)), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text


def test_two_calls_racing_for_one_name_answer_409_not_500(client, admin, monkeypatch):
    """The name check passes for both; the unique index refuses the second."""
    from sqlalchemy import false

    from service.datasets import service as datasets
    from service.tables import Dataset

    real_select = datasets.select

    def blind_name_check(*columns):  # as if the twin had not committed yet
        statement = real_select(*columns)
        return statement.where(false()) if columns[0] is Dataset.id else statement

    monkeypatch.setattr(datasets, "select", blind_name_check)
    body = {"name": "twin", "source": {"kind": "builtin", "name": "sklearn-digits"}}
    assert client.post("/v1/datasets", headers=admin, json=body).status_code == 201
    assert_problem(client.post("/v1/datasets", headers=admin, json=body), 409)
