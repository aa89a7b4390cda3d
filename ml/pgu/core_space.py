"""The core gradient space of a layer and the projection orthogonal to it (section 3.2.2-3).

Given a layer's cache C_r = R_r R_r^T (d x d, Eq. 3), its eigendecomposition
C_r = U_r diag(S_r^2) U_r^T is the left half of the SVD of R_r, so the singular values
are s = sqrt(eigenvalues), tiny negative eigenvalues from round-off clamped to 0.
The core gradient space (CGS) is M = [u_1 ... u_k] (the leading eigenvectors), with k the
smallest such that sum_{i<=k} s_i >= gamma * sum_i s_i. A weight gradient G (viewed as
out x d) is stepped only along G_perp = G - G M M^T (Eq. 4), which changes W r by nothing
for every r in the span of M: the retained samples' outputs barely move.

A grouped convolution's cache holds one C_r per group (groups, d, d); each group gets its
own core space, and group g's rows of G are projected with group g's projector
(:func:`layer_projector`, :func:`project_out`).

PGU's steps need only the projector I - M M^T, which is also U_rest U_rest^T (the
eigenvectors past the cut); a :class:`Projection` keeps whichever of M and U_rest is
thinner and never forms the d x d matrix. On the CPU, for a layer wider than
``PARTIAL_ABOVE``, :func:`layer_projector` computes every eigenvalue (the gamma rule sums
them all) but the eigenvectors of the smaller side alone (:func:`partial_projector`,
``ml.pgu.tridiagonal``): the same LAPACK reduction as a full eigh, at about half its cost
for small_cnn's widest layer. Below ``PARTIAL_ABOVE`` and on CUDA it runs the full
decomposition (:func:`singular_values`), as :func:`core_gradient_space` does, the
reference the tests hold the partial one against (with :func:`residual_projector`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ml.pgu.tridiagonal import Tridiagonal

__all__ = [
    "Projection",
    "singular_values",
    "core_gradient_space",
    "gamma_rank",
    "descending_singular_values",
    "residual_projector",
    "layer_projector",
    "full_projection",
    "partial_projector",
    "project_out",
]

# The width above which the partial decomposition was at least as fast on the CPU at both k
# measured: below it, SciPy's per-call overheads and MRRR's cost per vector can outweigh
# the vectors saved (k near d / 2, the most vectors, was not measured). AMD EPYC, 2
# threads, full eigh against partial: with k = 0.73 d (near small_cnn's widest layer's
# 0.78 d), d = 1,536 0.45 s against 0.36 s, d = 2,048 1.20 against 0.74;
# with k = 0.41 d (more vectors to compute), d = 1,536 0.44 against 0.50, d = 2,048 0.98
# against 1.03, d = 3,136 4.03 against 2.84 (`python -m benchmarks.core_space --threads 2
# --dims 1536,2048,3136`, with and without `--decades 1.3`).
PARTIAL_ABOVE = 2048


@dataclass(frozen=True)
class Projection:
    """Eq. 4's projector P = I - M M^T of one (d, d) cache, kept as the thinner of its two
    orthonormal factors: ``basis`` (d, m) is U_rest, the eigenvectors past the cut, when
    ``spans_range`` (P = U_rest U_rest^T), else M (P = I - M M^T). Applying it to a
    gradient's rows costs two (rows x d x m) products instead of one (rows x d x d), and
    nothing forms the d x d matrix (about 0.2 s at d = 3,136 with m = 701).

    A grouped convolution's groups are stacked, ``basis`` (groups, d, m), each group's
    factor on the same side and padded with zero columns to the widest (a zero column adds
    nothing to B B^T): one batched product projects every group's rows (:meth:`stacked`).
    """

    basis: torch.Tensor
    spans_range: bool

    def apply(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` (n, d), or (groups, n, d) for stacked groups, times P."""
        through = (rows @ self.basis) @ self.basis.mT
        return through if self.spans_range else rows - through

    def matrix(self) -> torch.Tensor:
        """P itself, (d, d) or (groups, d, d) (for tests and measurements)."""
        d = self.basis.shape[-2]
        return self.apply(torch.eye(d, dtype=self.basis.dtype, device=self.basis.device))

    def to(self, dtype: torch.dtype) -> Projection:
        return Projection(self.basis.to(dtype), self.spans_range)

    @property
    def width(self) -> int:
        return self.basis.shape[-1]

    @classmethod
    def thinner(cls, eigenvectors: torch.Tensor, k: int, *, outside: int = 0) -> Projection:
        """From every eigenvector (d x d, descending) and the cut k: the thinner side,
        counting ``outside`` more coordinates past the cut (zero rows, :meth:`embedded`)."""
        d = eigenvectors.shape[1]
        # copies: a view would keep the whole d x d decomposition alive
        if d - k + outside <= k:
            return cls(eigenvectors[:, k:].contiguous(), spans_range=True)
        return cls(eigenvectors[:, :k].contiguous(), spans_range=False)

    def embedded(self, inside: torch.Tensor, d: int) -> Projection:
        """This projection of the coordinates ``inside`` within d, the other coordinates
        (zero rows of C: singular value 0, past the cut) in P's range."""
        outside = torch.ones(d, dtype=torch.bool, device=inside.device)
        outside[inside] = False
        width = self.width + (int(outside.sum()) if self.spans_range else 0)
        basis = self.basis.new_zeros(d, width)
        basis[inside, : self.width] = self.basis
        if self.spans_range:
            columns = torch.arange(self.width, width, device=basis.device)
            basis[outside.nonzero().squeeze(1), columns] = 1.0
        return Projection(basis, self.spans_range)

    def flipped(self) -> Projection:
        """The same projector from its other factor: the eigenvectors of the d x d matrix P
        on the other side of its eigenvalues 1 and 0 (1 apart, so exact to rounding).
        Only for stacking groups whose thinner factors lie on different sides."""
        values, vectors = torch.linalg.eigh(self.matrix())
        other = vectors[:, values < 0.5] if self.spans_range else vectors[:, values >= 0.5]
        return Projection(other.contiguous(), not self.spans_range)

    @classmethod
    def stacked(cls, groups: list[Projection]) -> Projection:
        """The groups' projections as one, on the side that keeps the widest group
        thinnest (groups on the other side flipped), padded with zero columns."""
        d = groups[0].basis.shape[0]

        def width_on(side: bool) -> int:
            return max(g.width if g.spans_range == side else d - g.width for g in groups)

        side = width_on(True) <= width_on(False)
        same = [g if g.spans_range == side else g.flipped() for g in groups]
        width = max(g.width for g in same)
        basis = groups[0].basis.new_zeros(len(groups), d, width)
        for index, g in enumerate(same):
            basis[index, :, : g.width] = g.basis
        return cls(basis, side)


def singular_values(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, U): singular values of R in descending order and the matching columns of U.

    Coordinates R never fills (rows of C that are exactly zero) are split off before the
    eigendecomposition, which is exact: C is then block-diagonal with a zero block, whose
    eigenvectors are those coordinates' unit vectors, with singular value 0. Such rows are
    common, and large: a 3x3 convolution on a 1x1 feature map (a standard-stem ResNet's last
    stage on 28-32 pixel images) only ever multiplies padding with 8 of its 9 taps, so 4,096
    of its 4,608 rows are zero. Splitting them off turns a 4,608-wide eigendecomposition into
    a 512-wide one, and avoids MKL's multithreaded ``syevd``, which failed to converge on
    exactly that matrix ("too many repeated eigenvalues").
    """
    d = covariance.shape[0]
    filled = (covariance != 0).any(dim=1)
    if bool(filled.all()):
        eigenvalues, eigenvectors = _eigh(covariance)
        return descending_singular_values(eigenvalues), eigenvectors.flip(1)
    inside = filled.nonzero().squeeze(1)
    outside = (~filled).nonzero().squeeze(1)
    s_inside, u_inside = singular_values(covariance[inside][:, inside])
    s = torch.cat([s_inside, s_inside.new_zeros(len(outside))])
    u = covariance.new_zeros(d, d)
    u[inside, : len(inside)] = u_inside
    u[outside, torch.arange(len(inside), d, device=u.device)] = 1.0
    return s, u


def _eigh(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` (ascending), or, if LAPACK's solver does not converge, the
    SVD of C: for a symmetric positive semi-definite matrix C = U S U^T, so its singular
    values are the eigenvalues and U the eigenvectors (a different algorithm, gesdd,
    slower: 39 s against eigh's 11 s on a 4,608-wide C, only ever on a failure)."""
    try:
        return torch.linalg.eigh(covariance)
    except torch.linalg.LinAlgError:
        u, s, _ = torch.linalg.svd(covariance)  # descending
        return s.flip(0), u.flip(1)


def core_gradient_space(covariance: torch.Tensor, gamma: float) -> torch.Tensor:
    """M (d x k): the first k left singular vectors of R, k chosen by the gamma rule.

    The eigendecomposition runs in float64, like the cache. In float32 the eigenvectors of
    the small eigenvalues near the gamma cut carry errors of order eps * s_max^2 / gap, and
    on small_cnn's first Linear layer (d = 3136) the float32 core space at gamma 0.95 sat
    up to 9.9 degrees (largest principal angle) from the float64 one: not a tie broken
    differently but a different subspace, so the projection would let retained directions
    through. That first measurement's float32 path was not recorded; a float32 eigh of the
    float64 cache (``benchmarks.core_space.float32_projection``, on another trained model)
    sat 84 and 89 degrees away after the random 1% and the class deletions, and 18 and 44
    after one float64 Rayleigh-Ritz step on its vectors
    (``benchmarks.unlearning --scenarios core_spaces``).

    This computes every eigenvector (``torch.linalg.eigh``); PGU's steps only need the
    projection, which :func:`layer_projector` gets from one side of the cut alone on the
    CPU above ``PARTIAL_ABOVE``.
    """
    _check_gamma(gamma)
    s, u = singular_values(covariance.to(torch.float64))
    return u[:, : gamma_rank(s, gamma)]


def _check_gamma(gamma: float) -> None:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"Invalid gamma: {gamma}")


def descending_singular_values(eigenvalues: torch.Tensor) -> torch.Tensor:
    """R's singular values in descending order from C = R R^T's eigenvalues in ascending
    order (as eigh returns them), tiny negative ones from round-off clamped to 0."""
    return eigenvalues.flip(0).clamp(min=0).sqrt()


def gamma_rank(s: torch.Tensor, gamma: float) -> int:
    """k: the fewest of the descending singular values s whose sum reaches gamma * sum(s);
    0 when they are all 0 (the layer saw nothing: nothing to protect)."""
    total = s.sum()
    if total <= 0:
        return 0
    k = int(torch.searchsorted(s.cumsum(0), gamma * total).item()) + 1
    return min(k, len(s))


def residual_projector(core_space: torch.Tensor) -> torch.Tensor:
    """I - M M^T as a d x d matrix: right-multiplying a gradient by it gives Eq. 4's
    G - G M M^T (the dense reference for tests and measurements; PGU applies a
    :class:`Projection`)."""
    d = core_space.shape[0]
    identity = torch.eye(d, dtype=core_space.dtype, device=core_space.device)
    return identity - core_space @ core_space.T


def layer_projector(covariance: torch.Tensor, gamma: float) -> tuple[Projection, int]:
    """(the projection I - M M^T, k) for a layer's C_r: (d, d) and k = M's columns; for a
    grouped convolution's (groups, d, d) cache, each group's own, stacked in order
    (:meth:`Projection.stacked`), and the sum of their k. Float64, on C_r's device."""
    _check_gamma(gamma)
    if covariance.ndim == 2:
        return _projection(covariance.to(torch.float64), gamma)
    groups = [_projection(group.to(torch.float64), gamma) for group in covariance]
    return Projection.stacked([p for p, _ in groups]), sum(k for _, k in groups)


def _projection(covariance: torch.Tensor, gamma: float) -> tuple[Projection, int]:
    """(I - M M^T, k), from every eigenvalue but only the smaller side's eigenvectors where
    that pays (on the CPU, above ``PARTIAL_ABOVE``), else from eigh's full decomposition.

    Zero rows are split off first, as in :func:`singular_values`: their coordinates have
    singular value 0, so they lie past the cut, in the projector's range, and they count
    on the rest's side when choosing the thinner factor (a ResNet's 3x3 convolution on
    1x1 maps: 4,096 of 4,608 rows zero, so M is the thinner one).
    """
    d = covariance.shape[0]
    filled = (covariance != 0).any(dim=1)
    if not bool(filled.all()):
        inside = filled.nonzero().squeeze(1)
        if len(inside) == 0:  # the layer saw nothing: nothing to protect, P = I
            return Projection(covariance.new_zeros(d, 0), spans_range=False), 0
        block = covariance[inside][:, inside]
        inner, k = _filled_projection(block, gamma, outside=d - len(inside))
        return inner.embedded(inside, d), k
    return _filled_projection(covariance, gamma)


def _filled_projection(
    covariance: torch.Tensor, gamma: float, *, outside: int = 0
) -> tuple[Projection, int]:
    if covariance.device.type == "cpu" and covariance.shape[0] > PARTIAL_ABOVE:
        try:
            return partial_projector(covariance, gamma, outside=outside)
        except np.linalg.LinAlgError:  # LAPACK failed, or the vectors failed the check
            pass
    return full_projection(covariance, gamma, outside=outside)


def full_projection(
    covariance: torch.Tensor, gamma: float, *, outside: int = 0
) -> tuple[Projection, int]:
    """(I - M M^T, k) from eigh's full decomposition (:func:`singular_values`, zero rows
    split off): what :func:`layer_projector` runs up to ``PARTIAL_ABOVE`` and on CUDA.
    ``outside``: coordinates to be embedded past the cut (:meth:`Projection.thinner`)."""
    _check_gamma(gamma)
    s, u = singular_values(covariance.to(torch.float64))
    k = gamma_rank(s, gamma)
    return Projection.thinner(u, k, outside=outside), k


def partial_projector(
    covariance: torch.Tensor, gamma: float, *, outside: int = 0
) -> tuple[Projection, int]:
    """(I - M M^T, k) for a (d, d) C without zero rows, on the CPU (float64).

    I - M M^T projects onto the eigenvectors past the cut, so it is U_rest U_rest^T or
    I - M M^T, whichever side has fewer vectors (counting ``outside`` coordinates to be
    embedded past the cut on the rest's side): :class:`Tridiagonal` reduces C once,
    gives every eigenvalue for the gamma rule and then just that side's eigenvectors (the
    stages eigh runs, minus the other side's vectors; ``benchmarks.core_space`` prints
    both stages' times and the angle between their subspaces). SciPy's LAPACK runs on as
    many threads as torch. Raises ``numpy.linalg.LinAlgError`` where LAPACK fails or the
    result is not a projector onto a subspace C maps into itself (:func:`_verified`).
    """
    _check_gamma(gamma)
    c = covariance.detach().to(device="cpu", dtype=torch.float64)
    n = c.shape[0]
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        reduced = Tridiagonal(c.numpy())
        eigenvalues = torch.from_numpy(reduced.eigenvalues())  # ascending
        k = gamma_rank(descending_singular_values(eigenvalues), gamma)
        if n - k + outside <= k:  # past the cut: the n - k smallest eigenvalues
            projection = Projection(torch.from_numpy(reduced.eigenvectors(0, n - k)), True)
        else:
            projection = Projection(torch.from_numpy(reduced.eigenvectors(n - k, n)), False)
    return _verified(projection, c, float(eigenvalues.abs().max())), k


def _verified(projection: Projection, covariance: torch.Tensor, norm: float) -> Projection:
    """``projection``, once two random probes x show it idempotent (P P x = P x) and its
    range invariant under C ((I - P) C P x = 0), each to 1e-8 of the scale: a cheap (O(d^2))
    guard against an eigenvector set MRRR returned without reporting a failure but not
    orthogonal (LAPACK has had such bugs; the exact values sit near 1e-13)."""
    generator = torch.Generator().manual_seed(0)
    probes = torch.randn(2, projection.basis.shape[0], generator=generator, dtype=torch.float64)
    image = projection.apply(probes)  # rows: P is symmetric
    mapped = image @ covariance
    scale = float(probes.norm())
    idempotence = float((projection.apply(image) - image).norm()) / scale
    invariance = float((mapped - projection.apply(mapped)).norm()) / (scale * max(norm, 1e-300))
    if not (idempotence <= 1e-8 and invariance <= 1e-8):
        raise np.linalg.LinAlgError(
            f"partial eigendecomposition: not a projector onto an invariant subspace "
            f"(idempotence {idempotence:.1e}, invariance {invariance:.1e})"
        )
    return projection


def project_out(gradient: torch.Tensor, projection: Projection) -> torch.Tensor:
    """Eq. 4 for a weight gradient of any shape (out, ...): G.view(out, d) P, back in G's
    shape. A stacked projection (groups, d, m) projects each group's rows (out / groups of
    them, in order) with its own."""
    if projection.basis.ndim == 2:
        rows = gradient.reshape(gradient.shape[0], -1)
    else:
        groups, d = projection.basis.shape[0], projection.basis.shape[1]
        rows = gradient.reshape(groups, -1, d)
    return projection.apply(rows).view_as(gradient)
