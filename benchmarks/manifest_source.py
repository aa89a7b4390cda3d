"""A manifest of PNG files against the same images held in memory: Fashion-MNIST's training
images (from the Debian package ``dataset-fashion-mnist``) written as PNG files with a CSV
manifest, then, each phase in a process of its own (``ru_maxrss`` only grows):

- ``baseline``: the imports alone, the memory every other phase starts from;
- ``register``: indexing the manifest as registration does (``ml.datasets.index_source``:
  the manifest parsed, every path confined, every file stat'ed and its header checked);
  ``--normalization computed`` adds a pass decoding every image for mean and std;
- ``http``: the whole ``POST /v1/datasets`` in process on the embedded SQLite database
  (the index, the sample rows, the audit log entry), what a client waits for;
- ``lazy``: one epoch of ``small_cnn`` on the manifest, images decoded a batch at a time;
- ``memory``: the same epoch on the same images held as one tensor (the ``torchvision``
  source), the way the MNIST family is read.

    python -m benchmarks.manifest_source --rows 60000 --threads 1

The PNG files are written once under ``--dir`` (a temporary folder by default) and kept
there for a next run with the same ``--dir``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.fashion_mnist import ensure_fashion_mnist
from benchmarks.peak_memory import peak_mib
from ml.architectures import build_model
from ml.datasets import index_source, open_source
from ml.samples import SampleSet
from ml.training import TrainingConfig, train

PHASES = ("baseline", "register", "http", "lazy", "memory")
SMALL_CNN = {"channels": [16, 32], "hidden": 64}


def write_pngs(root: Path, rows: int) -> Path:
    """The first ``rows`` training images as ``fmnist/<i>.png`` and ``fmnist.csv``."""
    from PIL import Image
    from torchvision.datasets import FashionMNIST

    manifest = root / f"fmnist-{rows}.csv"
    if manifest.exists():
        return manifest
    images = FashionMNIST(str(ensure_fashion_mnist(root)), train=True, download=False)
    folder = root / "fmnist"
    folder.mkdir(exist_ok=True)
    partial = manifest.with_suffix(".partial")
    with open(partial, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["key", "label", "path"])
        for i in range(rows):
            path = folder / f"{i:05d}.png"
            if not path.exists():
                Image.fromarray(images.data[i].numpy()).save(path)
            writer.writerow([f"train/{i:05d}", int(images.targets[i]), f"fmnist/{i:05d}.png"])
    partial.rename(manifest)
    return manifest


def _epoch(samples: SampleSet, batch_size: int) -> float:
    torch.manual_seed(0)
    model = build_model("small_cnn", SMALL_CNN, [1, 28, 28], 10)
    config = TrainingConfig(epochs=1, batch_size=batch_size, lr=0.001)
    started = time.perf_counter()
    train(model, samples, config, device=torch.device("cpu"))
    return time.perf_counter() - started


def _http(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/datasets`` through the app, on a fresh SQLite database."""
    import os

    os.environ["UNLEARN_STATE_DIR"] = tempfile.mkdtemp(prefix="manifest-bench-state-")
    os.environ["UNLEARN_DATA_ROOT"] = str(root)
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.db import session_scope
    from service.keys import service as keys
    from service.migrate import upgrade

    upgrade()
    with session_scope() as session:
        _, key = keys.create_key(session, tenant_name="bench", scopes=["admin"])
    with TestClient(create_app()) as client:
        started = time.perf_counter()
        response = client.post(
            "/v1/datasets",
            headers={"Authorization": f"Bearer {key}"},
            json={"name": "fmnist", "source": manifest},
        )
        seconds = time.perf_counter() - started
    assert response.status_code == 201, response.text
    return {"seconds": round(seconds, 1), "peak_mib": round(peak_mib())}


def phase(name: str, root: Path, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    manifest = {"kind": "manifest", "path": f"fmnist-{rows}.csv"}
    if name == "baseline":  # the imports alone, what every other phase starts from
        return {"seconds": 0.0, "peak_mib": round(peak_mib())}
    if name == "register":
        if args.normalization:
            manifest["normalization"] = args.normalization
        started = time.perf_counter()
        index = index_source(manifest, root)
        seconds = time.perf_counter() - started
        assert len(index.keys) == rows
        return {"seconds": round(seconds, 1), "peak_mib": round(peak_mib())}
    if name == "http":
        return _http(root, manifest)
    if name == "lazy":
        adapter = open_source(manifest, root, loader_workers=args.loader_workers)
        positions = np.arange(rows)
    else:
        adapter = open_source({"kind": "torchvision", "name": "FashionMNIST"}, root)
        positions = np.arange(rows)  # the training images come first, in the same order
    index = adapter.index()
    samples = SampleSet(adapter, positions, index.labels[:rows], index.keys[:rows])
    seconds = _epoch(samples, args.batch_size)
    return {"seconds": round(seconds, 1), "peak_mib": round(peak_mib())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--normalization", choices=["computed"], default=None)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="manifest-bench-"))
    if args.phase:
        print(json.dumps(phase(args.phase, root, args.rows, args)))
        return
    started = time.perf_counter()
    write_pngs(root, args.rows)
    print(
        f"{args.rows} PNG files and their manifest in {root} "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    print("| phase | seconds | peak RSS (MiB) |\n|---|---:|---:|")
    for name in args.phases.split(","):
        command = [sys.executable, "-m", "benchmarks.manifest_source", "--phase", name]
        command += ["--rows", str(args.rows), "--dir", str(root), "--threads", str(args.threads)]
        command += ["--batch-size", str(args.batch_size)]
        command += ["--loader-workers", str(args.loader_workers)]
        if args.normalization:
            command += ["--normalization", args.normalization]
        result = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
        print(f"| {name} | {result['seconds']} | {result['peak_mib']} |", flush=True)


if __name__ == "__main__":
    main()
