"""PGU's memory and time on a torchvision network: the cache's size per version, and the
peak resident memory of the cache job and of one deletion, each measured in a process of
its own (``ru_maxrss`` only grows). Random 28x28 grey images stand in for data: neither
the cache's size nor the memory depends on the pixels.

    python -m benchmarks.pgu_memory --samples 500 --forget 64 --threads 2

The deletion starts from a cache of the right shapes (identity matrices, as resident as a
loaded one), so it measures PGU itself: the worker's load and store of the artifact add a
serialized copy, briefly, around it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ml.architectures import build_model
from ml.datasets import open_source
from ml.pgu import cache_bytes, discover_layers
from ml.samples import SampleSet
from ml.training import TrainingConfig
from ml.unlearners import Artifact, UnlearnContext, get_unlearner
from ml.unlearners.pgu import CACHE_ARTIFACT

SHAPE = [1, 28, 28]
MIB = 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _phase(args: argparse.Namespace) -> dict[str, float]:
    """One phase in this process: what it cost, and the peak memory before and after."""
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    count = args.samples + args.holdout
    if not (root / "images.npz").exists():
        rng = np.random.default_rng(0)
        np.savez(
            root / "images.npz",
            x=rng.random((count, *SHAPE), dtype=np.float32),
            y=np.arange(count) % 10,
            keys=np.array([f"k{i}" for i in range(count)]),
        )
    adapter = open_source({"kind": "npz", "path": "images.npz"}, root)
    index = adapter.index()

    def samples(rows: range) -> SampleSet:
        positions = np.asarray(rows)
        return SampleSet(
            adapter, positions, index.labels[positions], [index.keys[p] for p in positions]
        )

    train, held_out = samples(range(args.samples)), samples(range(args.samples, count))
    torch.manual_seed(0)
    model = build_model("torchvision", json.loads(args.params), SHAPE, 10).eval()
    pgu = get_unlearner("pgu", {"max_steps": args.steps, "stop": "none"})
    context = UnlearnContext(
        model=model,
        build_model=lambda: model,
        forget=samples(range(args.forget)),
        retain=train,
        validation=held_out,
        shadow=held_out,
        training=TrainingConfig(),
        device=torch.device("cpu"),
        base_version=1,
    )
    found: dict[str, float] = {"baseline_mib": _peak_mib()}
    started = time.perf_counter()
    if args.phase == "cache":
        pgu.prepare(context)
    else:

        def loaded(name: str) -> Artifact | None:
            """A fresh cache per call, as the worker loads one: PGU holds the only copy."""
            tensors = {
                layer.name: torch.eye(layer.dim, dtype=torch.float64)
                .expand(layer.cache_shape)
                .clone()
                for layer in discover_layers(model)
            }
            meta = {"basis_version": 1, "samples": args.samples}
            return Artifact(tensors, meta) if name == CACHE_ARTIFACT else None

        context.artifacts = loaded
        info = pgu.unlearn(context).info
        found |= {k: v for k, v in info.items() if k.endswith("_seconds")}
    found |= {"seconds": time.perf_counter() - started, "peak_mib": _peak_mib()}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default='{"builder": "resnet18", "small_input_stem": true}')
    parser.add_argument("--samples", type=int, default=500, help="D, the cache job's samples")
    parser.add_argument("--forget", type=int, default=64, help="D_f of the deletion")
    parser.add_argument("--holdout", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2, help="PGU's max_steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", choices=["cache", "deletion"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args)))
        return 0
    network = build_model("torchvision", json.loads(args.params), SHAPE, 10)
    print(f"torchvision {args.params} on {SHAPE}: cache {cache_bytes(network) / MIB:.0f} MiB")
    with tempfile.TemporaryDirectory() as data:
        for phase in ("cache", "deletion"):
            argv = [a for a in sys.argv[1:]] + ["--phase", phase, "--data", data]
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.pgu_memory", *argv],
                check=True,
                capture_output=True,
                text=True,
            )
            found = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{phase}: {found['seconds']:.0f} s, peak RSS {found['peak_mib']:.0f} MiB "
                f"({found['peak_mib'] - found['baseline_mib']:.0f} MiB above the process's "
                f"{found['baseline_mib']:.0f})",
                {k: round(v, 1) for k, v in found.items() if k.endswith("_seconds")} or "",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
