"""What PGU's float64 cache pass costs: C = R R^T over a set of samples, per network.

Usage: python -m benchmarks.cache_update [--archs small_cnn,resnet18] [--samples 5468]
                                         [--threads N] [--repeats 2] [--state-dir DIR]

A deletion's first stage (Eq. 3) runs this pass over the forget set (R_f R_f^T) and a
version's cache job over the whole training set (``ml.pgu.input_covariances``): a float64
copy of the network whose Linear and Conv2d layers accumulate their inputs' products.
The default sample count is class 0 of the unlearning benchmark's training set (the class
deletion's forget set), read from Fashion-MNIST (the Debian package); the networks are
freshly initialised, as the pass's cost does not depend on the weights' values. The table
prints, per network, the seconds (best of ``--repeats``, after one untimed run) and the
samples per second.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch

from benchmarks.fashion_mnist import ensure_fashion_mnist
from benchmarks.inference import INPUT_SHAPE, NETWORKS, NUM_CLASSES
from benchmarks.machine import cpu_name
from benchmarks.timing import best_of
from benchmarks.unlearning import samples_at
from ml.architectures import build_model
from ml.datasets import open_source
from ml.pgu import input_covariances
from ml.pgu.representations import covariance_batch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(NETWORKS), help="comma-separated")
    parser.add_argument("--samples", type=int, default=5468)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--state-dir", type=Path, default=Path(".state/bench"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ensure_fashion_mnist(args.state_dir)
    adapter = open_source({"kind": "torchvision", "name": "FashionMNIST"}, args.state_dir)
    samples = samples_at(adapter, np.arange(min(args.samples, len(adapter.index().keys))))
    print(
        f"cache update: torch {torch.__version__}, {device.type} ({cpu_name()}), "
        f"{torch.get_num_threads()} threads, {len(samples)} Fashion-MNIST samples, batches "
        f"of {covariance_batch(device)}, float64, best of {args.repeats}"
    )
    print("| architecture | seconds | samples/s |")
    print("|---|---|---|")
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = build_model(*NETWORKS[arch], INPUT_SHAPE, NUM_CLASSES).eval().to(device)
        seconds, _ = best_of(
            functools.partial(input_covariances, model, samples, device=device),
            args.repeats,
            device=device,
            warm_up=True,
        )
        print(f"| {arch} | {seconds:.2f} | {len(samples) / seconds:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
