"""Bring your own data through the service: a CSV or Parquet manifest of PNG files, a
tabular manifest and an image-folder tree are each registered, trained on, forgotten from
by key and audited; bad sources are a 422 that stores nothing; a changed sample fails the
next job that reads it, by name, while a forgotten sample's file may go."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from ml.datasets import clear_cache
from ml.samples import SampleSet
from service.db import session_scope
from service.subjects import subject_digest
from service.tables import AuditLogEntry, Dataset, Sample, Tenant
from tests.helpers.app import configure, create_model, forget_now, run_queued_jobs, train_keys
from tests.helpers.own_data import (
    SIZE,
    tabular_rows,
    write_csv,
    write_parquet,
    write_pngs,
    write_tree,
)

HOLDOUT = 0.25


def _csv_images(root: Path) -> dict[str, Any]:
    write_csv(root / "digits.csv", write_pngs(root))
    return {"kind": "manifest", "path": "digits.csv", "normalization": "computed"}


def _parquet_images(root: Path) -> dict[str, Any]:
    write_parquet(root / "digits.parquet", write_pngs(root))
    return {"kind": "manifest", "path": "digits.parquet", "num_classes": 10}


def _csv_tabular(root: Path) -> dict[str, Any]:
    write_csv(root / "rows.csv", tabular_rows())
    return {"kind": "manifest", "path": "rows.csv"}


def _parquet_tabular(root: Path) -> dict[str, Any]:
    write_parquet(root / "rows.parquet", tabular_rows())
    return {"kind": "manifest", "path": "rows.parquet", "normalization": "computed"}


def _tree(root: Path) -> dict[str, Any]:
    write_tree(root)
    (root / "tree" / "README.txt").write_text("not an image, not in a class folder")
    return {"kind": "imagefolder", "root": "tree"}


SOURCES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "csv-images": _csv_images,
    "parquet-images": _parquet_images,
    "csv-tabular": _csv_tabular,
    "parquet-tabular": _parquet_tabular,
    "imagefolder": _tree,
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _register(client, admin, name: str, source: dict[str, Any]):
    return client.post(
        "/v1/datasets",
        headers=admin,
        json={"name": name, "source": source, "holdout_fraction": HOLDOUT},
    )


def _request(client, admin, request_id: str) -> dict:
    return client.get(f"/v1/deletion-requests/{request_id}", headers=admin).json()


@pytest.mark.parametrize("name", SOURCES)
def test_a_source_is_registered_trained_forgotten_by_key_and_audited(client, admin, env, name):
    source = SOURCES[name](Path(env["data_root"]))
    response = _register(client, admin, name, source)
    assert response.status_code == 201, response.text
    dataset = response.json()
    holdout = round(HOLDOUT * SIZE)
    assert dataset["counts"] == {"train": SIZE - holdout, "holdout": holdout, "test": 0}
    assert dataset["num_classes"] == 10
    tabular = "tabular" in name
    assert dataset["input_shape"] == ([64] if tabular else [1, 8, 8])
    if source.get("normalization") == "computed":  # stored as the numbers it computed
        normalization = dataset["source"]["normalization"]
        assert len(normalization["mean"]) == dataset["input_shape"][0]
        assert 0.0 < normalization["mean"][-1 if tabular else 0] < 1.0

    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    model = client.get(f"/v1/models/{model['id']}", headers=admin).json()
    assert model["head_version"] == 1, model
    version = client.get(f"/v1/models/{model['id']}/versions/1", headers=admin).json()
    assert version["metrics"]["ra"] > 0.3  # it learned something from the decoded images

    keys = train_keys(client, admin, dataset["id"], 5)
    request = _request(client, admin, forget_now(client, admin, model["id"], keys)["id"])
    assert request["status"] == "completed" and request["result_version"] == 2, request
    certificate = client.get(f"/v1/deletion-requests/{request['id']}/certificate", headers=admin)
    assert certificate.status_code == 200 and certificate.json()["audit"]["verdict"]
    sample = client.get(f"/v1/datasets/{dataset['id']}/samples/{keys[0]}", headers=admin).json()
    assert sample["state"] == "forgotten"


def _replace_image(path: Path) -> None:
    """Other pixels, and another size and modification time."""
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(path, compress_level=0)
    os.utime(path, ns=(10**18, 10**18))


def test_a_changed_image_fails_the_next_job_naming_it(client, admin, env, monkeypatch):
    root = Path(env["data_root"])
    dataset = _register(client, admin, "digits", _csv_images(root)).json()
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    configure(monkeypatch, job_max_attempts=1)
    keys = train_keys(client, admin, dataset["id"], 3)
    changed = train_keys(client, admin, dataset["id"], 10)[-1]
    _replace_image(root / "img" / f"{int(changed.split('-')[1])}.png")

    accepted = forget_now(client, admin, model["id"], keys)
    request = _request(client, admin, accepted["id"])
    assert request["status"] == "failed", request
    assert repr(changed) in request["error"] and "file size" in request["error"], request
    jobs = client.get("/v1/jobs", headers=admin, params={"model_id": model["id"]}).json()["items"]
    [unlearn] = [job for job in jobs if job["kind"] == "unlearn"]
    assert "SourceChanged" in unlearn["error"] and repr(changed) in unlearn["error"]
    head = client.get(f"/v1/models/{model['id']}", headers=admin).json()["head_version"]
    assert head == 1  # nothing was published from misread data


def test_a_changed_manifest_row_fails_the_next_job_naming_it(client, admin, env, monkeypatch):
    root = Path(env["data_root"])
    write_csv(root / "rows.csv", tabular_rows())
    dataset = _register(client, admin, "rows", {"kind": "manifest", "path": "rows.csv"}).json()
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    configure(monkeypatch, job_max_attempts=1)
    keys = train_keys(client, admin, dataset["id"], 3)
    rows = tabular_rows()
    changed = train_keys(client, admin, dataset["id"], 10)[-1]
    [row] = [r for r in rows if r["key"] == changed]
    row["label"] = (int(row["label"]) + 1) % 10  # relabelled in place
    write_csv(root / "rows.csv", rows)

    request = _request(client, admin, forget_now(client, admin, model["id"], keys)["id"])
    assert request["status"] == "failed"
    assert f"{changed!r} (manifest row changed)" in request["error"], request["error"]


def test_forgotten_samples_files_and_rows_may_go(client, admin, env):
    """After a request completes, its samples' files and manifest rows may be deleted: the
    jobs that follow never read them."""
    root = Path(env["data_root"])
    rows = write_pngs(root)
    write_csv(root / "digits.csv", rows)
    dataset = _register(client, admin, "digits", {"kind": "manifest", "path": "digits.csv"})
    dataset = dataset.json()
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    first = train_keys(client, admin, dataset["id"], 4)
    request = _request(client, admin, forget_now(client, admin, model["id"], first)["id"])
    assert request["status"] == "completed"

    by_key = {row["key"]: row for row in rows}
    for key in first[:2]:  # files deleted, rows kept
        (root / str(by_key[key]["path"])).unlink()
    for key in first[2:]:  # files and rows deleted
        (root / str(by_key[key]["path"])).unlink()
    write_csv(root / "digits.csv", [r for r in rows if r["key"] not in first[2:]])

    second = train_keys(client, admin, dataset["id"], 8)[4:]
    request = _request(client, admin, forget_now(client, admin, model["id"], second)["id"])
    assert request["status"] == "completed" and request["result_version"] == 3, request


def test_removing_an_active_sample_fails_the_next_job(client, admin, env, monkeypatch):
    root = Path(env["data_root"])
    keys = write_tree(root)
    dataset = _register(client, admin, "tree", {"kind": "imagefolder", "root": "tree"}).json()
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    configure(monkeypatch, job_max_attempts=1)
    active = train_keys(client, admin, dataset["id"], 10)
    gone = active[-1]
    (root / "tree" / gone).unlink()
    request = _request(client, admin, forget_now(client, admin, model["id"], active[:2])["id"])
    assert request["status"] == "failed"
    assert f"{gone!r} (missing from the source)" in request["error"], request["error"]
    assert len(keys) == SIZE


def test_a_subject_column_is_checked_and_stored_only_as_its_keyed_digest(client, admin, env):
    root = Path(env["data_root"])
    rows = [
        row | {"subject": f"person-{i % 7}@example.com"} for i, row in enumerate(write_pngs(root))
    ]
    write_csv(root / "people.csv", rows)
    source = {"kind": "manifest", "path": "people.csv"}
    response = _register(client, admin, "people", source)
    assert response.status_code == 201, response.text
    with session_scope() as session:
        samples = session.scalars(select(Sample)).all()
        stored = (
            [(s.key, s.fingerprint, s.subject_digest) for s in samples]
            + [(d.source, d.name) for d in session.scalars(select(Dataset))]
            + [e.payload for e in session.scalars(select(AuditLogEntry))]
        )
    with session_scope() as session:
        key = session.scalar(select(Tenant.subject_key).where(Tenant.name == "acme"))
    by_key = {s.key: s.subject_digest for s in samples}
    assert len(samples) == SIZE
    assert by_key["digit-010"] == subject_digest(key or "", "person-3@example.com")
    assert by_key["digit-010"] == by_key["digit-003"] != by_key["digit-004"]
    assert "example.com" not in json.dumps(stored, default=str)
    rows[3]["subject"] = "x" * 201
    write_csv(root / "long.csv", rows)
    response = _register(client, admin, "long", {"kind": "manifest", "path": "long.csv"})
    assert response.status_code == 422 and "'digit-003'" in response.json()["detail"]


def _bad_sources(root: Path, outside: Path) -> dict[str, dict[str, Any]]:
    """One bad source per case, written under ``root``: name -> source."""
    rows = write_pngs(root)
    cases: dict[str, list[dict[str, object]]] = {
        "duplicate-keys": rows[:5] + [dict(rows[5], key=rows[0]["key"])],
        "label-out-of-range": rows[:5] + [dict(rows[5], label=10)],
        "negative-label": rows[:5] + [dict(rows[5], label=-1)],
        "unicode-digit-label": rows[:5] + [dict(rows[5], label="\u00b2")],
        "path-outside": rows[:5] + [dict(rows[5], path="../outside.png")],
        "absolute-path": rows[:5] + [dict(rows[5], path=str(outside / "outside.png"))],
        "symlink-out": rows[:5] + [dict(rows[5], path="img/link.png")],
        "not-an-image": rows[:5] + [dict(rows[5], path="notes.txt")],
        "unreadable": rows[:5] + [dict(rows[5], path="locked.png")],
        "gif": rows[:5] + [dict(rows[5], path="anim.gif")],
        "fifo": rows[:5] + [dict(rows[5], path="pipe.png")],
        "device": rows[:5] + [dict(rows[5], path="dev-null.png")],
        "missing-file": rows[:5] + [dict(rows[5], path="img/nope.png")],
        "mixed-sizes": rows[:5] + [dict(rows[5], path="big.png")],
        "too-many-pixels": [dict(rows[0], path="huge.png")],
    }
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside / "outside.png")
    (root / "img" / "link.png").symlink_to(outside / "outside.png")
    (root / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "locked.png")
    whole = (root / "locked.png").read_bytes()
    (root / "locked.png").write_bytes(whole[:-16])  # its header intact, its data cut short
    if os.geteuid() != 0:  # root reads any file
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "denied.png")
        (root / "denied.png").chmod(0)
        cases["permission-denied"] = rows[:5] + [dict(rows[5], path="denied.png")]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "anim.gif")
    os.mkfifo(root / "pipe.png")
    try:  # a device node inside the data root, where this process may make one
        os.mknod(root / "dev-null.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        (root / "dev-null.png").symlink_to("/dev/null")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "big.png")
    Image.new("1", (5000, 4000)).save(root / "huge.png")  # 20 million pixels, a few kB
    sources = {}
    for name, case in cases.items():
        write_csv(root / f"{name}.csv", case)
        sources[name] = {"kind": "manifest", "path": f"{name}.csv"}
    sources["label-out-of-range"]["num_classes"] = 10
    write_csv(root / "no-key.csv", rows[:5], header=["id", "label", "path"])
    sources["header-without-key"] = {"kind": "manifest", "path": "no-key.csv"}
    (root / "widths.csv").write_text("key,label,a,b\nx,1,0.5,0.5\ny,0,0.5\n")
    sources["mixed-feature-widths"] = {"kind": "manifest", "path": "widths.csv"}
    (root / "words.csv").write_text("key,label,a\nx,1,0.5\ny,0,high\n")
    sources["non-numeric-feature"] = {"kind": "manifest", "path": "words.csv"}
    (root / "both.csv").write_text("key,label,path,a\nx,1,img/0.png,0.5\n")
    sources["path-and-features"] = {"kind": "manifest", "path": "both.csv"}
    (root / "broken.parquet").write_bytes(b"PAR1 not really")
    sources["broken-parquet"] = {"kind": "manifest", "path": "broken.parquet"}
    sources["manifest-is-a-fifo"] = {"kind": "manifest", "path": "pipe.png"}
    sources["manifest-outside"] = {"kind": "manifest", "path": "../rows.csv"}
    write_csv(root / "ten.csv", rows[:6])
    sources["labels-above-num-classes"] = {"kind": "manifest", "path": "ten.csv", "num_classes": 2}
    sources["normalization-width"] = {
        "kind": "manifest",
        "path": "ten.csv",
        "normalization": {"mean": [0.5, 0.5], "std": [1.0, 1.0]},
    }
    write_tree(root, "tree", count=20)
    (root / "tree" / "3" / "fake.png").write_text("not a png")
    sources["tree-with-a-non-image"] = {"kind": "imagefolder", "root": "tree"}
    write_tree(root, "tree2", count=20)
    (root / "tree2" / "3" / "out.png").symlink_to(outside / "outside.png")
    sources["tree-with-a-symlink-out"] = {"kind": "imagefolder", "root": "tree2"}
    (root / "flat").mkdir()
    sources["tree-without-classes"] = {"kind": "imagefolder", "root": "flat"}
    return sources


def test_bad_sources_are_a_422_that_stores_nothing(client, admin, env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = Path(env["data_root"])
    sources = _bad_sources(root, outside)
    for name, source in sources.items():
        response = _register(client, admin, name, source)
        assert response.status_code == 422, (name, response.text)
        problem = response.json()
        assert problem["detail"] and str(root.resolve()) not in response.text, (name, problem)
        print(name, problem["detail"])  # each reason, on failure
    assert client.get("/v1/datasets", headers=admin).json()["items"] == []
    # What each is refused for, where the reason is the point.
    reasons = {
        name: _register(client, admin, name, source).json()["detail"]
        for name, source in sources.items()
    }
    assert "duplicate keys: 'digit-000'" in reasons["duplicate-keys"]
    assert "'digit-005' ('10') is not a class in 0..9" in reasons["label-out-of-range"]
    assert "outside the data root" in reasons["path-outside"]
    assert "outside the data root" in reasons["symlink-out"]
    assert "not a PNG or JPEG" in reasons["not-an-image"]
    assert "GIF" in reasons["gif"] and "unreadable" in reasons["unreadable"]
    assert "not a regular file" in reasons["fifo"]
    assert "not a regular file" in reasons["device"] or "outside" in reasons["device"]
    assert "'key'" in reasons["header-without-key"]
    assert "the header has 4" in reasons["mixed-feature-widths"]
    assert "16x16" in reasons["mixed-sizes"]
    assert "more than 16777216 pixels" in reasons["too-many-pixels"]
    assert client.get("/v1/datasets", headers=admin).json()["items"] == []


def test_images_are_decoded_by_loader_worker_processes_when_configured(
    client, admin, env, monkeypatch
):
    configure(monkeypatch, loader_workers=2)
    seen: list[int] = []
    original = SampleSet.loader

    def loader(samples, *args, **kwargs):
        made = original(samples, *args, **kwargs)
        seen.append(made.num_workers)
        return made

    monkeypatch.setattr(SampleSet, "loader", loader)
    dataset = _register(client, admin, "digits", _csv_images(Path(env["data_root"]))).json()
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    keys = train_keys(client, admin, dataset["id"], 3)
    request = _request(client, admin, forget_now(client, admin, model["id"], keys)["id"])
    assert request["status"] == "completed", request
    assert seen and set(seen) == {2}  # training and fine-tuning read through 2 processes
