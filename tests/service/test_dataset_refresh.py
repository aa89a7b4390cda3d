"""Datasets that grow, end to end through the service: a refresh adds the source's new keys
as the next generation (splits given as registration gives them) and reports changed or
vanished active samples without taking them; each version records the generation it was
trained on, a retrain of a version trains on that generation minus what was forgotten, and
new samples join a model only through a version trained or uploaded after them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save

from ml.architectures import build_model
from ml.datasets import clear_cache
from tests.helpers.app import FAST_TRAINING, create_model, forget_now, run_queued_jobs
from tests.helpers.own_data import tabular_rows, write_csv, write_pngs, write_tree

FIRST = 60  # rows at registration; 20 more come later


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _register(client, admin, source: dict) -> dict:
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": "grows", "source": source, "holdout_fraction": 0.25},
    )
    assert response.status_code == 201, response.text
    return response.json()


def _refresh(client, admin, dataset_id: str) -> dict:
    response = client.post(f"/v1/datasets/{dataset_id}/refresh", headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


def _keys(client, admin, dataset_id: str, split: str = "train") -> list[str]:
    response = client.get(
        f"/v1/datasets/{dataset_id}/samples",
        params={"split": split, "limit": 500},
        headers=admin,
    )
    return [item["key"] for item in response.json()["items"]]


def _retrained_samples(client, admin, model_id: str, keys: list[str]) -> int:
    """Forget ``keys`` with `retrain`; how many samples the retrain trained on (per epoch)."""
    request = forget_now(client, admin, model_id, keys)
    jobs = client.get("/v1/jobs", headers=admin, params={"model_id": model_id}).json()["items"]
    [job] = [j for j in jobs if j["kind"] == "unlearn" and request["id"] in j["request_ids"]]
    assert job["status"] == "succeeded", job
    return job["report"]["samples"] // FAST_TRAINING["epochs"]


def test_refresh_adds_keys_and_a_versions_retrain_uses_its_own_generation(client, admin, env):
    root = Path(env["data_root"])
    rows = tabular_rows()
    write_csv(root / "rows.csv", rows[:FIRST])
    dataset = _register(client, admin, {"kind": "manifest", "path": "rows.csv"})
    assert dataset["generation"] == 1 and dataset["counts"]["train"] == 45
    model = create_model(client, admin, dataset["id"], unlearner={"name": "retrain"})
    run_queued_jobs(model["id"])
    first = client.get(f"/v1/models/{model['id']}/versions/1", headers=admin).json()
    assert first["generation"] == 1

    unchanged = _refresh(client, admin, dataset["id"])  # nothing new: nothing changes
    assert unchanged["dataset"]["generation"] == 1
    assert unchanged["added"] == {"train": 0, "holdout": 0, "test": 0}

    write_csv(root / "rows.csv", rows)
    report = _refresh(client, admin, dataset["id"])
    assert report["dataset"]["generation"] == 2
    assert report["added"] == {"train": 15, "holdout": 5, "test": 0}  # 25% held out
    assert report["dataset"]["counts"] == {"train": 60, "holdout": 20, "test": 0}
    assert report["changed"] == [] and report["vanished"] == []
    new_keys = {row["key"] for row in rows[FIRST:]}
    sample = client.get(f"/v1/datasets/{dataset['id']}/samples/{rows[-1]['key']}", headers=admin)
    assert sample.json()["generation"] == 2
    assert new_keys <= set(_keys(client, admin, dataset["id"])) | set(
        _keys(client, admin, dataset["id"], "holdout")
    )

    # Version 1 saw generation 1: its retrain trains on those 45 minus what it forgets.
    old_keys = [k for k in _keys(client, admin, dataset["id"]) if k not in new_keys]
    assert _retrained_samples(client, admin, model["id"], old_keys[:2]) == 43
    second = client.get(f"/v1/models/{model['id']}/versions/2", headers=admin).json()
    assert second["generation"] == 1

    # Uploaded weights say which generation they were trained on (default: the newest).
    state = build_model("mlp", {"hidden": [64]}, [64], 10).state_dict()
    data = save({name: tensor.contiguous() for name, tensor in state.items()})
    refused = client.post(
        f"/v1/models/{model['id']}/versions",
        headers=admin,
        files={"file": ("w.safetensors", io.BytesIO(data), "application/octet-stream")},
        data={"generation": "3"},
    )
    assert refused.status_code == 422, refused.text
    uploaded = client.post(
        f"/v1/models/{model['id']}/versions",
        headers=admin,
        files={"file": ("w.safetensors", io.BytesIO(data), "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["generation"] == 2
    run_queued_jobs(model["id"])  # its evaluation
    # From version 3 on, the model knows generation 2: 60 training samples less 3 forgotten.
    assert _retrained_samples(client, admin, model["id"], old_keys[2:3]) == 57


def test_refresh_reports_changed_and_vanished_samples_and_takes_neither(client, admin, env):
    root = Path(env["data_root"])
    rows = write_pngs(root)
    write_csv(root / "digits.csv", rows[:FIRST])
    dataset = _register(client, admin, {"kind": "manifest", "path": "digits.csv"})
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    active = _keys(client, admin, dataset["id"])
    forgotten = active[:2]
    forget_now(client, admin, model["id"], forgotten)

    by_key = {row["key"]: row for row in rows}
    relabelled, vanished = active[2], active[3]
    by_key[relabelled]["label"] = (int(by_key[relabelled]["label"]) + 1) % 10
    (root / str(by_key[forgotten[0]]["path"])).unlink()  # a forgotten file may go
    kept = [by_key[k] for k in by_key if k not in (vanished, forgotten[1])]
    write_csv(root / "digits.csv", kept)
    report = _refresh(client, admin, dataset["id"])
    assert report["changed"] == [
        {"key": relabelled, "reason": "manifest row changed; label changed"}
    ]
    assert report["vanished"] == [vanished] and report["vanished_count"] == 1
    assert sum(report["added"].values()) == len(rows) - FIRST
    sample = client.get(f"/v1/datasets/{dataset['id']}/samples/{relabelled}", headers=admin)
    assert sample.json()["label"] != by_key[relabelled]["label"]  # not taken

    (root / "odd").mkdir()
    (root / "odd" / "broken.png").write_bytes((root / "img" / "5.png").read_bytes()[:50])
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "odd" / "wide.png")
    cases = {  # a new image that is broken, or of another size (listed first or last)
        "broken": ([{"key": "broken", "label": 1, "path": "odd/broken.png"}, *kept], "'broken'"),
        "wide": ([*kept, {"key": "wide", "label": 1, "path": "odd/wide.png"}], "'wide' is 16x16"),
        "wide-first": ([{"key": "w", "label": 1, "path": "odd/wide.png"}, *kept], "[1, 16, 16]"),
    }
    for name, (listed, named) in cases.items():
        write_csv(root / "digits.csv", listed)
        response = client.post(f"/v1/datasets/{dataset['id']}/refresh", headers=admin)
        assert response.status_code == 422 and named in response.json()["detail"], name
    current = client.get(f"/v1/datasets/{dataset['id']}", headers=admin).json()
    assert current["generation"] == 2  # the refused refresh stored nothing


def test_an_image_folder_grows_and_new_classes_are_refused(client, admin, env):
    root = Path(env["data_root"])
    write_tree(root, count=40)
    dataset = _register(client, admin, {"kind": "imagefolder", "root": "tree"})
    assert dataset["num_classes"] == 10
    for key in write_tree(root, folder="more", count=70)[40:]:  # 30 new files join the tree
        shutil.copy(root / "more" / key, root / "tree" / key)
    report = _refresh(client, admin, dataset["id"])
    assert sum(report["added"].values()) == 30 and report["changed"] == [], report
    assert report["dataset"]["generation"] == 2

    (root / "tree" / "zz").mkdir()  # an eleventh class folder, sorted last
    shutil.copy(root / "more" / "0" / "000.png", root / "tree" / "zz" / "new.png")
    response = client.post(f"/v1/datasets/{dataset['id']}/refresh", headers=admin)
    assert response.status_code == 422, response.text
    assert "'zz/new.png'" in response.json()["detail"]
    assert "cannot add classes" in response.json()["detail"]


def test_new_rows_bring_their_subjects_as_keyed_digests(client, admin, env):
    """A refresh digests the new rows' subjects as registration does, so a request by
    subject finds a sample that joined later."""
    root = Path(env["data_root"])
    rows = [row | {"subject": f"person-{i % 5}"} for i, row in enumerate(write_pngs(root))]
    write_csv(root / "people.csv", rows[:FIRST])
    dataset = _register(client, admin, {"kind": "manifest", "path": "people.csv"})
    write_csv(root / "people.csv", rows)
    _refresh(client, admin, dataset["id"])
    model = create_model(client, admin, dataset["id"])  # trained on both generations
    run_queued_jobs(model["id"])
    newcomers = {row["key"] for row in rows[FIRST:] if row["subject"] == "person-2"}
    trained = set(_keys(client, admin, dataset["id"])) & newcomers
    assert trained, "some of person-2's new rows are training samples"
    answer = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model["id"], "subject_id": "person-2"},
    )
    assert answer.status_code == 202, answer.text
    assert trained <= set(answer.json()["sample_keys"])
