"""What one inference pass costs, by batch size and memory layout (``ml.training.predict``).

Usage: python -m benchmarks.inference [--archs small_cnn,resnet18] [--samples 1000]
                                      [--batches 128,256,1024] [--threads N] [--repeats 3]

Every stop rule's check (``ml.unlearners.early_stopping``) runs a network over about a
thousand fixed samples, several times per deletion; the evaluation and ConMU's proxy read
``predict`` too. The table prints, per architecture and batch size, the seconds (best of
``--repeats``) to infer ``--samples`` random 1x28x28 inputs in the contiguous (NCHW)
layout and in channels-last, and the largest difference between the two layouts' logits.
The networks are freshly initialised: the cost of a forward pass does not depend on the
weights' values. On the CPU ``predict`` runs batches of ``CPU_INFERENCE_BATCH`` in
channels-last (:func:`ml.training.channels_last_on_cpu`): that row's last columns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.machine import cpu_name
from benchmarks.timing import best_of
from ml.architectures import build_model
from ml.training import CPU_INFERENCE_BATCH, channels_last_on_cpu

__all__ = ["main"]

CPU = torch.device("cpu")
NUM_CLASSES = 10
INPUT_SHAPE = [1, 28, 28]
# --archs names: the architecture and its params, as the unlearning benchmark builds them
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "small_cnn": ("small_cnn", {}),
    "resnet18": ("torchvision", {"builder": "resnet18"}),
}


def _inference(model: nn.Module, inputs: torch.Tensor, batch: int) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(rows) for rows in inputs.split(batch)])

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(NETWORKS), help="comma-separated")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batches", default="128,256,1024", help="comma-separated sizes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"inference: torch {torch.__version__}, cpu ({cpu_name()}), {torch.get_num_threads()} "
        f"threads, {args.samples} random {'x'.join(map(str, INPUT_SHAPE))} inputs, float32, "
        f"best of {args.repeats}; predict uses batches of {CPU_INFERENCE_BATCH}, channels-last"
    )
    print("| architecture | batch | contiguous (s) | channels-last (s) | speed-up | max diff |")
    print("|---|---|---|---|---|---|")
    inputs = torch.randn(args.samples, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = build_model(*NETWORKS[arch], INPUT_SHAPE, NUM_CLASSES).eval()
        for batch in (int(b) for b in args.batches.split(",")):
            plain, expected = best_of(
                _inference(model, inputs, batch), args.repeats, device=CPU, warm_up=True
            )
            with channels_last_on_cpu(model):
                last, got = best_of(
                    _inference(model, inputs, batch), args.repeats, device=CPU, warm_up=True
                )
            difference = float((expected - got).abs().max())
            print(
                f"| {arch} | {batch} | {plain:.3f} | {last:.3f} | {plain / last:.1f}x | "
                f"{difference:.1e} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
