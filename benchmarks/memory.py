"""Peak memory and time of the methods the issue sized for a 24 GB machine (PGU's cache
job and deletion, LTU, DAU) on a torchvision network, each phase measured in a process of
its own (``ru_maxrss`` only grows), on random images (no size here depends on the pixels),
on the CPU: resident memory stands in for what the same tensors take on a GPU.

    python -m benchmarks.memory --methods pgu --shape 1,28,28 --samples 500 --forget 64
    python -m benchmarks.memory --methods ltu,dau --shape 3,32,32 --samples 2000 --forget 256

PGU's deletion starts from a cache of the right shapes made afresh for it, as the worker
loads one, so it measures PGU itself: the worker's load and store of the artifact add a
serialized copy, briefly, around it. Every run is short (``--steps`` steps, no stop rule,
DAU's attacker barely pre-trained): peaks come from one step, not from many.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.peak_memory import peak_mib
from ml.architectures import build_model
from ml.datasets import open_source
from ml.pgu import cache_bytes, discover_layers
from ml.samples import SampleSet
from ml.training import TrainingConfig
from ml.unlearners import Artifact, UnlearnContext, get_unlearner, run_unlearner
from ml.unlearners.pgu import CACHE_ARTIFACT

MIB = 2**20


def _params(method: str, steps: int) -> dict[str, Any]:
    return {
        "pgu": {"max_steps": steps, "stop": "none"},
        "ltu": {"iterations": steps, "mi_steps": 10, "stop": "none"},
        "dau": {
            "iterations": steps,
            "attacker_pretrain_steps": 5,
            "validation_eval_size": 64,
            "stop": "none",
        },
    }[method]


def _fresh_cache(model: torch.nn.Module, samples: int) -> Artifact:
    """A cache of the model's shapes (identity matrices: as resident as a loaded one)."""
    tensors = {
        layer.name: torch.eye(layer.dim, dtype=torch.float64).expand(layer.cache_shape).clone()
        for layer in discover_layers(model)
    }
    return Artifact(tensors, {"basis_version": 1, "samples": samples})


def _phase(args: argparse.Namespace, shape: list[int]) -> dict[str, float]:
    """One phase in this process: its time, and the peak memory before and after."""
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    count = args.samples + 2 * args.holdout
    if not (root / "images.npz").exists():
        rng = np.random.default_rng(0)
        np.savez(
            root / "images.npz",
            x=rng.random((count, *shape), dtype=np.float32),
            y=np.arange(count) % 10,
            keys=np.array([f"k{i}" for i in range(count)]),
        )
    adapter = open_source({"kind": "npz", "path": "images.npz"}, root)
    index = adapter.index()

    def samples(start: int, stop: int) -> SampleSet:
        rows = np.arange(start, stop)
        return SampleSet(adapter, rows, index.labels[rows], [index.keys[r] for r in rows])

    torch.manual_seed(0)
    model = build_model("torchvision", json.loads(args.params), shape, 10).eval()
    method, _, phase = args.phase.partition(":")
    unlearner = get_unlearner(method, _params(method, args.steps))
    context = UnlearnContext(
        model=model,
        build_model=lambda: build_model("torchvision", json.loads(args.params), shape, 10),
        forget=samples(0, args.forget),
        retain=samples(args.forget, args.samples),
        validation=samples(args.samples, args.samples + args.holdout),
        shadow=samples(args.samples + args.holdout, count),
        training=TrainingConfig(),
        device=torch.device("cpu"),
        base_version=1,
    )
    found: dict[str, float] = {"baseline_mib": peak_mib()}
    started = time.perf_counter()
    if phase == "cache":  # over every sample, as the cache job
        unlearner.prepare(dataclasses.replace(context, retain=samples(0, args.samples)))
    else:
        if method == "pgu":
            context.artifacts = lambda name: (
                _fresh_cache(model, args.samples) if name == CACHE_ARTIFACT else None
            )
        info = run_unlearner(unlearner, context).info
        found |= {k: v for k, v in info.items() if k.endswith("_seconds")}
    found |= {"seconds": time.perf_counter() - started, "peak_mib": peak_mib()}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="pgu,ltu,dau")
    parser.add_argument("--params", default='{"builder": "resnet18", "small_input_stem": true}')
    parser.add_argument("--shape", default="1,28,28", help="the images' C,H,W")
    parser.add_argument("--samples", type=int, default=500, help="D: D_f and D_r")
    parser.add_argument("--forget", type=int, default=64, help="D_f")
    parser.add_argument("--holdout", type=int, default=100, help="D_v, and as many shadow")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = [int(side) for side in args.shape.split(",")]
    if args.phase:
        print(json.dumps(_phase(args, shape)))
        return 0
    network = build_model("torchvision", json.loads(args.params), shape, 10)
    print(f"torchvision {args.params} on {shape}: PGU's cache {cache_bytes(network) / MIB:.0f} MiB")
    phases = [
        phase
        for method in args.methods.split(",")
        for phase in ((f"{method}:cache", f"{method}:deletion") if method == "pgu" else (method,))
    ]
    with tempfile.TemporaryDirectory() as data:
        for phase in phases:
            argv = [*sys.argv[1:], "--phase", phase, "--data", data]
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", *argv],
                check=True,
                capture_output=True,
                text=True,
            )
            found = json.loads(done.stdout.strip().splitlines()[-1])
            stages = {k: round(v, 1) for k, v in found.items() if k.endswith("_seconds")}
            print(
                f"{phase}: {found['seconds']:.0f} s, peak RSS {found['peak_mib']:.0f} MiB "
                f"({found['peak_mib'] - found['baseline_mib']:.0f} MiB above the process's "
                f"{found['baseline_mib']:.0f})",
                stages or "",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
