"""What PGU's core space costs, against the floor of any exact way to get it.

Usage: python -m benchmarks.core_space [--dims 288,1024,3136,4608] [--threads N]
                                       [--device auto|cpu|cuda] [--gamma 0.95]

The core space of a layer (``ml.pgu.core_space``) needs *every* eigenvalue of its d x d
float64 covariance C (the gamma rule sums all their square roots) and the eigenvectors on
one side of the cut. Every dense symmetric eigensolver LAPACK offers first reduces C to
tridiagonal form (about 4/3 d^3 flops, half of them memory-bound matrix-vector products);
computing the eigenvalues alone costs that reduction and little more, so it is a floor
for any exact method, whatever it reuses from an earlier version (an update of a kept
eigenbasis still rotates a dense d x d matrix). The table prints, per d:

- ``core space``: today's stage, :func:`ml.pgu.core_space.core_gradient_space` (eigh with
  vectors, then the gamma rule);
- ``eigenvalues only``: ``torch.linalg.eigvalsh``, the floor above;
- ``one GEMM``: one d x d x d matrix product, what rotating a kept basis costs at least;
- ``k``: the core space's size at ``--gamma``.

C is a synthetic covariance (R R^T, with R's rows scaled so that its eigenvalues fall over
six decades as a trained layer's do): the eigensolvers' cost depends on d, not on the data.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks.machine import cpu_name
from ml.devices import resolve_device
from ml.pgu.core_space import core_gradient_space

__all__ = ["covariance", "measure", "main"]


def covariance(d: int, *, seed: int = 0, device: torch.device) -> torch.Tensor:
    """A d x d float64 covariance R R^T of 2d columns, its eigenvalues spread over about six
    decades."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -3, d, dtype=torch.float64)
    r = torch.randn(d, 2 * d, dtype=torch.float64, generator=generator) * scales[:, None]
    return (r @ r.T).to(device)


def _seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The best of ``repeats`` timed runs (after one warm-up on CUDA)."""
    if device.type == "cuda":
        run()
        torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def measure(d: int, *, gamma: float, device: torch.device, repeats: int = 2) -> dict[str, float]:
    c = covariance(d, device=device)
    k = core_gradient_space(c, gamma).shape[1]
    return {
        "d": d,
        "k": k,
        "core_space": _seconds(lambda: core_gradient_space(c, gamma), device, repeats),
        "eigenvalues": _seconds(lambda: torch.linalg.eigvalsh(c), device, repeats),
        "gemm": _seconds(lambda: c @ c, device, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="288,1024,3136,4608", help="comma-separated sizes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gamma", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"core space cost: torch {torch.__version__}, {device} ({where}), "
        f"{torch.get_num_threads()} threads, gamma {args.gamma}, float64, best of {args.repeats}"
    )
    print(
        "| d | k | core space (s) | eigenvalues only (s) | one GEMM (s) "
        "| core space / eigenvalues only |"
    )
    print("|---|---|---|---|---|---|")
    for d in (int(x) for x in args.dims.split(",")):
        row = measure(d, gamma=args.gamma, device=device, repeats=args.repeats)
        print(
            f"| {d} | {row['k']} | {row['core_space']:.3f} | {row['eigenvalues']:.3f} | "
            f"{row['gemm']:.3f} | {row['core_space'] / row['eigenvalues']:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
