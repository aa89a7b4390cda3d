"""The device jobs run on (``UNLEARN_DEVICE``): what each value resolves to, a worker that
refuses to start on a GPU it lacks (one line, exit 2), the warning when ``auto`` settles on
the CPU of a process given a GPU, the ``unlearn_worker_info`` series, and, where torch sees
a GPU, jobs that train and unlearn on it."""

from __future__ import annotations

import logging

import pytest
import torch

from ml import devices
from ml.devices import DeviceUnavailable, resolve_device
from service import metrics
from service.bootstrap import RefusedToStart
from service.settings import Settings
from tests.helpers.app import (
    configure,
    create_dataset,
    create_model,
    forget_now,
    run_queued_jobs,
    train_keys,
)
from workers.cli import main
from workers.device import announce_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Set how many CUDA devices torch counts; no GPU hint in the environment either."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "NVIDIA_DEVICE_FILES", "/nonexistent/nvidia[0-9]*")

    def count(number: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: number)

    return count


def _info(device: str) -> float | None:
    labels = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda or "none"}
    return metrics.REGISTRY.get_sample_value("unlearn_worker_info", labels)


def test_each_setting_resolves_to_its_device(gpus):
    gpus(0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(DeviceUnavailable, match=f"UNLEARN_DEVICE={asked}, but torch .* no GPU"):
            resolve_device(asked)
    gpus(1)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(DeviceUnavailable, match="sees 1 CUDA device;"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", "mps", ""])
def test_an_unknown_device_setting_is_refused_in_every_process(value):
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        Settings(device=value)


def test_auto_on_the_cpu_warns_only_when_a_gpu_was_expected(gpus, monkeypatch, caplog):
    gpus(0)
    caplog.set_level(logging.INFO, logger="workers.device")
    assert announce_device("auto") == torch.device("cpu")
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert caplog.records[0].device == "cpu"
    assert _info("cpu") == 1.0

    caplog.clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    announce_device("auto")
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "GPU was expected (CUDA_VISIBLE_DEVICES=0)" in warning.getMessage()
    caplog.clear()
    announce_device("cpu")  # asked for: nothing to warn about
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_series_is_in_the_exposition(gpus):
    gpus(0)
    announce_device("cpu")
    text = metrics.exposition(include_domain=False).decode()
    assert f'unlearn_worker_info{{cuda="{torch.version.cuda or "none"}",device="cpu",' in text


def test_a_worker_asked_for_a_gpu_it_lacks_refuses_to_start(env, gpus, monkeypatch, capsys):
    from workers.celery_app import app

    gpus(0)
    started: list[list[str]] = []
    monkeypatch.setattr(app, "worker_main", lambda argv: started.append(argv))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(env["state_dir"]))  # keep its own out
    configure(monkeypatch, device="cuda")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unlearnd: UNLEARN_DEVICE=cuda, but torch (torch ")
    assert len(err.strip().splitlines()) == 1 and not started
    # A worker that runs no jobs (callbacks, dispatch) needs no device.
    assert main(["worker", "--queues", "callbacks,control"]) == 0 and len(started) == 1
    # Asked for the CPU, it starts, and exports the device it runs jobs on.
    configure(monkeypatch, device="cpu")
    assert main(["worker", "--queues", "gpu"]) == 0 and len(started) == 2
    assert _info("cpu") == 1.0


@CUDA
def test_jobs_train_and_unlearn_on_the_gpu(client, admin, monkeypatch):
    """UNLEARN_DEVICE=cuda: version 1 trained, its PGU cache built and one deletion
    unlearned (float64 covariances and eigendecompositions) on the GPU."""
    import workers.workload

    configure(monkeypatch, device="cuda")
    used: list[torch.device] = []

    def resolved(preference: str) -> torch.device:
        used.append(resolve_device(preference))
        return used[-1]

    monkeypatch.setattr(workers.workload, "resolve_device", resolved)
    dataset = create_dataset(client, admin)
    architecture = {"name": "small_cnn", "params": {"channels": [8, 16], "hidden": 32}}
    model = create_model(
        client,
        admin,
        dataset["id"],
        architecture=architecture,
        unlearner={"name": "pgu", "params": {"max_steps": 5}},
    )
    run_queued_jobs(model["id"])
    forget_now(client, admin, model["id"], train_keys(client, admin, dataset["id"], 10))
    jobs = client.get("/v1/jobs", headers=admin, params={"model_id": model["id"]}).json()
    statuses = {j["kind"]: j["status"] for j in jobs["items"]}
    assert {"train", "cache", "unlearn"} <= set(statuses), statuses
    assert set(statuses.values()) == {"succeeded"}, statuses
    assert client.get(f"/v1/models/{model['id']}", headers=admin).json()["head_version"] == 2
    assert used and set(used) == {torch.device("cuda", 0)}


def test_refused_to_start_is_what_a_missing_gpu_raises(gpus):
    gpus(0)
    with pytest.raises(RefusedToStart, match="UNLEARN_DEVICE=cuda:0"):
        announce_device("cuda:0")
