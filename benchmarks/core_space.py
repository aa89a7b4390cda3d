"""What PGU's core space costs, against the floor of any exact way to get it.

Usage: python -m benchmarks.core_space [--dims 288,1024,2048,3136,4608] [--threads N]
                                       [--device auto|cpu|cuda] [--gamma 0.95]
                                       [--decades 3]

The core space of a layer (``ml.pgu.core_space``) needs *every* eigenvalue of its d x d
float64 covariance C (the gamma rule sums all their square roots) and the eigenvectors on
one side of the cut. Every dense symmetric eigensolver LAPACK offers first reduces C to
tridiagonal form (about 4/3 d^3 flops, half of them memory-bound matrix-vector products);
computing the eigenvalues alone costs that reduction and little more, so it is a floor
for any exact method, whatever it reuses from an earlier version (an update of a kept
eigenbasis still rotates a dense d x d matrix). The table prints, per d:

- ``k``: the core space's size at ``--gamma``;
- ``full eigh``: the projection I - M M^T from every eigenvector (``torch.linalg.eigh``,
  :func:`ml.pgu.core_space.full_projection`, keeping the thinner factor), the stage
  before the partial one;
- ``partial``: :func:`ml.pgu.core_space.partial_projector` (one reduction, every
  eigenvalue, the smaller side's eigenvectors only), the stage PGU runs on the CPU above
  ``PARTIAL_ABOVE`` (2,048; up to it and on CUDA PGU runs the full eigh, cuSOLVER's there:
  the column then shows what the partial path would cost);
- ``eigenvalues only``: ``torch.linalg.eigvalsh``, the floor above;
- ``one GEMM``: one d x d x d matrix product, what rotating a kept basis costs at least;
- ``angle``: the largest principal angle between the two stages' subspaces, in degrees
  (for two orthogonal projectors of equal rank, arcsin of their difference's 2-norm);
- ``float32 + Rayleigh-Ritz`` and its angle to the full eigh's subspace: an approximate
  stage tried and not kept (:func:`refined_float32`): a float32 eigh, then the smaller
  side's vectors with a margin refined in float64; ``float32 angle``: the float32 eigh's
  own subspace, unrefined.

C is a synthetic covariance R R^T, R's rows scaled so that its singular values fall over
``--decades`` decades (eigenvalues over twice as many): the eigensolvers' cost depends on
d, but which side of the cut the partial stage computes depends on k. Three decades give
k about 0.41 d at gamma 0.95; 1.3 give about 0.73 d, near the 0.78 d that small_cnn's
first Linear layer has at full size (k = 2,435 of 3,136).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from benchmarks.machine import cpu_name
from benchmarks.timing import best_of
from ml.devices import resolve_device
from ml.pgu.core_space import (
    Projection,
    descending_singular_values,
    full_projection,
    gamma_rank,
    layer_projector,
    partial_projector,
)

__all__ = [
    "covariance",
    "measure",
    "principal_angle",
    "refined_float32",
    "float32_projection",
    "WindowMissed",
    "layer_rows",
    "main",
]

# how many vectors :func:`refined_float32` adds to the smaller side's, on the other side
# of the float32 cut
MARGIN = 64


class WindowMissed(ValueError):
    """The exact cut fell outside (or on the edge of) :func:`refined_float32`'s window."""


T = TypeVar("T")


def covariance(
    d: int, *, seed: int = 0, decades: float = 3.0, device: torch.device
) -> torch.Tensor:
    """A d x d float64 covariance R R^T of 2d columns, its singular values spread over about
    ``decades`` decades."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -decades, d, dtype=torch.float64)
    r = torch.randn(d, 2 * d, dtype=torch.float64, generator=generator) * scales[:, None]
    return (r @ r.T).to(device)


def _timed(run: Callable[[], T], device: torch.device, repeats: int) -> tuple[float, T]:
    """:func:`benchmarks.timing.best_of`, warmed up on CUDA only (a CPU eigh costs seconds)."""
    return best_of(run, repeats, device=device, warm_up=device.type == "cuda")


def measure(
    d: int, *, gamma: float, device: torch.device, repeats: int = 2, decades: float = 3.0
) -> dict[str, float]:
    c = covariance(d, decades=decades, device=device)
    full_seconds, (full, _) = _timed(lambda: full_projection(c, gamma), device, repeats)
    partial_seconds, (partial, k) = _timed(
        lambda: partial_projector(c.cpu(), gamma), device, repeats
    )
    return {
        "d": d,
        "k": k,
        "full": full_seconds,
        "partial": partial_seconds,
        "eigenvalues": _timed(lambda: torch.linalg.eigvalsh(c), device, repeats)[0],
        "gemm": _timed(lambda: c @ c, device, repeats)[0],
        "angle": principal_angle(partial.matrix().to(full.basis.device), full.matrix()),
        **_approximations(c, gamma, full, k, device, repeats),
    }


def _approximations(
    c: torch.Tensor, gamma: float, full: Projection, k: int, device: torch.device, repeats: int
) -> dict[str, Any]:
    """The float32 stages' seconds and their angles to ``full`` (NaN where their k differs
    from the exact k, the subspaces then having different dimensions, or where the refined
    stage found the cut outside its window)."""
    plain, plain_k = float32_projection(c, gamma)
    exact = full.matrix()
    try:
        seconds, (refined, refined_k) = _timed(lambda: refined_float32(c, gamma), device, repeats)
    except WindowMissed:
        seconds, refined, refined_k = float("nan"), plain, -1

    def angle(projection: Projection, its_k: int) -> float:
        if its_k != k:
            return float("nan")
        return principal_angle(projection.matrix().to(exact.device), exact)

    return {
        "refined": seconds,
        "refined_angle": angle(refined, refined_k),
        "float32_angle": angle(plain, plain_k),
    }


def float32_projection(covariance: torch.Tensor, gamma: float) -> tuple[Projection, int]:
    """(I - M M^T, k) from a float32 eigh of C: the core space rejected for PGU (its
    subspace sits degrees from float64's near a dense cut: ``ml.pgu.core_space``)."""
    values, vectors = torch.linalg.eigh(covariance.to(torch.float32))
    k = gamma_rank(descending_singular_values(values), gamma)
    return Projection.thinner(vectors.flip(1).to(torch.float64), k), k


def refined_float32(
    covariance: torch.Tensor, gamma: float, *, margin: int = MARGIN
) -> tuple[Projection, int]:
    """(I - M M^T, k): an approximate core space, measured here and not used by PGU.

    A float32 eigh gives every eigenvalue and a first guess of the smaller side of the cut;
    that side's vectors and ``margin`` more across the cut (an m-dimensional subspace Y,
    re-orthonormalised in float64) are refined by one float64 Rayleigh-Ritz step: the
    eigenpairs of Y^T C Y, C being the float64 cache. The gamma rule then reads the Ritz
    values on that side and float32's eigenvalues on the other. The hope was that Y's
    float32 error, about eps_32 ||C|| over the gap at the margin's far end rather than at
    the cut, would be small. It was not: on small_cnn's trained 3,136-wide layer the result
    sat 18 to 44 degrees from the exact subspace (float32 alone 84 to 89; docs/benchmarks.md,
    "PGU's core space"). Presumably eps_32 ||C|| exceeds the gaps among eigenvalues decades
    below the largest, the margin's far end included, so Y itself is off (not measured).
    Raises :class:`WindowMissed` where the exact cut leaves no vector of Y on the far side
    of it: the step would then only rotate Y within itself.
    """
    c = covariance.to(torch.float64)
    d = c.shape[0]
    values, vectors = torch.linalg.eigh(c.to(torch.float32))  # ascending
    guess = gamma_rank(descending_singular_values(values), gamma)
    past_cut = d - guess <= guess  # the smaller side lies past the cut (small eigenvalues)
    m = min(d, (d - guess if past_cut else guess) + margin)
    window = vectors[:, :m] if past_cut else vectors[:, d - m :]
    q, _ = torch.linalg.qr(window.to(torch.float64))
    ritz_values, ritz_vectors = torch.linalg.eigh(q.T @ (c @ q))  # ascending
    merged = values.to(torch.float64)
    if past_cut:
        merged[:m] = ritz_values
    else:
        merged[d - m :] = ritz_values
    k = gamma_rank(descending_singular_values(merged.sort().values), gamma)
    if m < d and (d - k if past_cut else k) >= m:
        raise WindowMissed(f"the cut (k {k}) fell outside the refined window of {m}")
    if past_cut:
        return Projection(q @ ritz_vectors[:, : d - k], spans_range=True), k
    return Projection(q @ ritz_vectors[:, m - k :], spans_range=False), k


def principal_angle(p: torch.Tensor, q: torch.Tensor) -> float:
    """The largest principal angle (degrees) between the ranges of two orthogonal projectors
    of equal rank: sin of it is ||p - q||_2 (Golub and Van Loan, 2.5.3)."""
    gap = torch.linalg.eigvalsh(p - q).abs().max().clamp(max=1.0)
    return float(torch.rad2deg(torch.asin(gap)))


def layer_rows(
    downdated: dict[str, torch.Tensor], gamma: float, device: torch.device
) -> list[dict[str, Any]]:
    """For each layer of a real downdated cache (C_r keyed by weight name, (d, d) or a
    grouped convolution's (groups, d, d)): d, k, the full eigh's and PGU's own stage's
    seconds (:func:`ml.pgu.core_space.layer_projector`, partial on the CPU above
    ``PARTIAL_ABOVE``) and the largest principal angle between their subspaces (over the
    groups). Used by ``benchmarks.unlearning``'s ``core_spaces`` scenario."""
    return [_layer_row(name, cache, gamma, device) for name, cache in downdated.items()]


def _layer_row(
    name: str, cache: torch.Tensor, gamma: float, device: torch.device
) -> dict[str, Any]:
    c = cache.to(device=device, dtype=torch.float64)
    groups = c if c.ndim == 3 else c.unsqueeze(0)

    def full() -> list[Projection]:
        return [full_projection(g, gamma)[0] for g in groups]

    full_seconds, reference = _timed(full, device, 1)
    pgu_seconds, (projection, k) = _timed(lambda: layer_projector(c, gamma), device, 1)
    projectors = projection.matrix()
    ours = projectors if projectors.ndim == 3 else projectors.unsqueeze(0)
    row = {
        "layer": name,
        "d": c.shape[-1],
        "k": k,
        "full": full_seconds,
        "pgu": pgu_seconds,
        "angle": max(
            principal_angle(p.to(r.basis.device), r.matrix())
            for p, r in zip(ours, reference, strict=True)
        ),
    }
    if c.ndim == 2:  # the float32 stages, on ungrouped layers
        row.update(_approximations(c, gamma, reference[0], k, device, 1))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="288,1024,2048,3136,4608", help="comma-separated sizes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gamma", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decades", type=float, default=3.0, help="of the singular values")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"core space cost: torch {torch.__version__}, {device} ({where}), "
        f"{torch.get_num_threads()} threads, gamma {args.gamma}, float64, best of {args.repeats}, "
        f"singular values over {args.decades:g} decades"
    )
    print(
        "| d | k | full eigh (s) | partial (s) | full / partial | eigenvalues only (s) "
        "| one GEMM (s) | partial / eigenvalues only | angle (deg) "
        "| float32 + Rayleigh-Ritz (s) | its angle (deg) | float32 angle (deg) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in (int(x) for x in args.dims.split(",")):
        row = measure(
            d, gamma=args.gamma, device=device, repeats=args.repeats, decades=args.decades
        )
        print(
            f"| {d} | {row['k']} | {row['full']:.3f} | {row['partial']:.3f} | "
            f"{row['full'] / row['partial']:.1f}x | {row['eigenvalues']:.3f} | "
            f"{row['gemm']:.3f} | {row['partial'] / row['eigenvalues']:.1f}x | "
            f"{row['angle']:.1e} | {row['refined']:.3f} | {row['refined_angle']:.1e} | "
            f"{row['float32_angle']:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
