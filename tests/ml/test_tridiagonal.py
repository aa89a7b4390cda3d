"""One reduction, every eigenvalue, the eigenvectors of one end: the same eigenpairs as eigh,
and PGU's projector from them the same as from the full decomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ml.pgu.core_space as core_space_module
from ml.pgu.core_space import (
    Projection,
    core_gradient_space,
    layer_projector,
    partial_projector,
    residual_projector,
)
from ml.pgu.tridiagonal import Tridiagonal

EPS = float(np.finfo(np.float64).eps)
WIDE = 96  # the partial path's threshold in these tests (the real one is 2,048)


@pytest.fixture(autouse=True)
def _partial_above_wide(monkeypatch):
    monkeypatch.setattr(core_space_module, "PARTIAL_ABOVE", WIDE)


def _covariance(d: int, columns: int, *, seed: int, decades: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    r = rotation @ (rng.standard_normal((d, columns)) * np.logspace(0, -decades, d)[:, None])
    return r @ r.T


@pytest.mark.parametrize("d", [1, 2, 7, 60])
def test_eigenpairs_of_any_range_are_eigh_s(d):
    c = _covariance(d, d + 3, seed=d)
    expected = np.linalg.eigvalsh(c)
    reduced = Tridiagonal(c)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(reduced.eigenvalues(), expected, rtol=0, atol=1e3 * EPS * scale)
    for start, stop in [(0, d), (0, (d + 1) // 2), (d // 2, d), (d - 1, d)]:
        vectors = reduced.eigenvectors(start, stop)
        assert vectors.shape == (d, stop - start)
        # orthonormal, and C v = lambda v to within LAPACK's backward error
        np.testing.assert_allclose(vectors.T @ vectors, np.eye(stop - start), atol=1e3 * EPS * d)
        residual = c @ vectors - vectors * expected[start:stop]
        assert np.abs(residual).max() <= 1e3 * EPS * d * scale
    assert reduced.eigenvectors(3 % d, 3 % d).shape == (d, 0)
    # no call changes the reduction another reads (LAPACK overwrites d and e in place)
    np.testing.assert_array_equal(reduced.eigenvalues(), reduced.eigenvalues())
    np.testing.assert_allclose(reduced.eigenvalues(), expected, rtol=0, atol=1e3 * EPS * scale)
    np.testing.assert_array_equal(reduced.eigenvectors(0, d), reduced.eigenvectors(0, d))


def test_a_range_outside_the_matrix_or_a_matrix_not_square_is_refused():
    with pytest.raises(ValueError, match="range"):
        Tridiagonal(np.eye(4)).eigenvectors(2, 5)
    with pytest.raises(ValueError, match="square"):
        Tridiagonal(np.ones((3, 4)))


def _angle_sine(p: torch.Tensor, q: torch.Tensor) -> float:
    """sin of the largest principal angle between two equal-rank projectors' ranges."""
    return float(torch.linalg.eigvalsh(p - q).abs().max())


@pytest.mark.parametrize("gamma", [0.3, 0.95])  # the core side smaller, then the rest
def test_the_projector_after_random_low_rank_downdates_equals_a_fresh_eigh_s(gamma):
    """Davis-Kahan's form, sin(angle) <= (both decompositions' errors) / gap, with a
    heuristic constant for LAPACK's unspecified p(d): 10 d eps ||C|| (measured angles sit
    near 1e-13, the bounds near 1e-9; the gap across the cut is kept meaningful)."""
    d, rng = 120, np.random.default_rng(7)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rows = rotation @ (rng.standard_normal((d, 600)) * np.logspace(0, -2, d)[:, None])
    kept, c = np.ones(600, dtype=bool), torch.from_numpy(rows @ rows.T)
    for _ in range(4):  # C_r = C - R_f R_f^T, each time forgetting 40 more samples
        forgotten = rng.choice(np.flatnonzero(kept), size=40, replace=False)
        kept[forgotten] = False
        c = c - torch.from_numpy(rows[:, forgotten] @ rows[:, forgotten].T)
        partial, k = partial_projector(c, gamma)
        assert partial.basis.shape[1] == min(k, d - k)  # the thinner side
        core = core_gradient_space(c, gamma)
        assert k == core.shape[1] and 0 < k < d
        eigenvalues = torch.linalg.eigvalsh(c).flip(0)  # descending
        gap = float(eigenvalues[k - 1] - eigenvalues[k])
        bound = 10 * d * EPS * float(eigenvalues[0]) / gap
        assert _angle_sine(partial.matrix(), residual_projector(core)) <= bound < 1e-6


def test_a_wide_layer_with_zero_rows_gets_the_partial_projector_embedded(monkeypatch):
    """Above PARTIAL_ABOVE the CPU path reduces the filled block alone; the zero rows'
    coordinates lie past the cut (in the projector's range), as in the full path."""
    d = WIDE + 40
    filled = np.ones(d, dtype=bool)
    filled[::10] = False  # 14 coordinates no sample fills, 122 filled
    block = _covariance(int(filled.sum()), 2 * d, seed=3, decades=1.3)
    c = np.zeros((d, d))
    c[np.ix_(filled, filled)] = block
    calls: list[int] = []
    real = core_space_module.partial_projector

    def counted(covariance: torch.Tensor, gamma: float, *, outside: int) -> tuple[Projection, int]:
        calls.append(covariance.shape[0])
        return real(covariance, gamma, outside=outside)

    monkeypatch.setattr(core_space_module, "partial_projector", counted)
    projection, k = layer_projector(torch.from_numpy(c), 0.95)
    projector = projection.matrix()
    assert calls == [int(filled.sum())] > [WIDE]
    reference = residual_projector(core_gradient_space(torch.from_numpy(c), 0.95))
    assert k == core_gradient_space(torch.from_numpy(c), 0.95).shape[1]
    assert _angle_sine(projector, reference) < 1e-8
    unfilled = torch.from_numpy(~filled)
    assert torch.equal(projector.diagonal()[unfilled], torch.ones(int(unfilled.sum())))
    assert projection.width == min(k, d - k)  # the zero rows counted on the rest's side


@pytest.mark.parametrize("wide", [False, True])  # the full eigh's path, then the partial one
def test_zero_rows_count_on_the_rest_s_side_when_choosing_the_thinner_factor(wide):
    """A ResNet's 3x3 convolution on 1x1 maps: most rows zero. Inside the filled block the
    rest's side is thinner, but with the zero rows embedded on it M is."""
    n = WIDE + 4 if wide else 40
    zeros = 3 * n
    block = _covariance(n, 2 * n, seed=11, decades=1.3)
    c = np.zeros((n + zeros, n + zeros))
    c[:n, :n] = block
    inner, k_inner = layer_projector(torch.from_numpy(block), 0.95)
    assert inner.spans_range  # alone, U_rest is the thinner factor
    projection, k = layer_projector(torch.from_numpy(c), 0.95)
    assert k == k_inner and not projection.spans_range and projection.width == k
    reference = residual_projector(core_gradient_space(torch.from_numpy(c), 0.95))
    assert _angle_sine(projection.matrix(), reference) < 1e-8


def test_mrrr_giving_up_falls_back_to_the_full_decomposition(monkeypatch):
    tried: list[tuple[int, int]] = []

    def gives_up(self: Tridiagonal, start: int, stop: int) -> np.ndarray:
        tried.append((start, stop))
        raise np.linalg.LinAlgError("LAPACK dstemr failed (info 2)")

    monkeypatch.setattr(Tridiagonal, "eigenvectors", gives_up)
    c = torch.from_numpy(_covariance(WIDE + 1, 2 * WIDE, seed=5))
    projection, k = layer_projector(c, 0.9)
    core = core_gradient_space(c, 0.9)
    assert len(tried) == 1 and k == core.shape[1]
    assert _angle_sine(projection.matrix(), residual_projector(core)) < 1e-8


def test_vectors_mrrr_returns_without_an_error_but_not_orthogonal_are_refused(monkeypatch):
    real = Tridiagonal.eigenvectors

    def skewed(self: Tridiagonal, start: int, stop: int) -> np.ndarray:
        vectors = real(self, start, stop)
        vectors[:, 0] = (vectors[:, 0] + vectors[:, 1]) / np.sqrt(2)  # still unit length
        return vectors

    monkeypatch.setattr(Tridiagonal, "eigenvectors", skewed)
    c = torch.from_numpy(_covariance(WIDE + 1, 2 * WIDE, seed=6))
    with pytest.raises(np.linalg.LinAlgError, match="not a projector"):
        partial_projector(c, 0.9)
    projection, _ = layer_projector(c, 0.9)  # the full decomposition instead
    reference = residual_projector(core_gradient_space(c, 0.9))
    assert _angle_sine(projection.matrix(), reference) < 1e-8


@pytest.mark.parametrize(("gamma", "side"), [(0.3, "core"), (0.99, "rest")])
def test_only_the_smaller_side_s_eigenvectors_are_computed(monkeypatch, gamma, side):
    asked: list[tuple[int, int]] = []
    real = Tridiagonal.eigenvectors

    def recorded(self: Tridiagonal, start: int, stop: int) -> np.ndarray:
        asked.append((start, stop))
        return real(self, start, stop)

    monkeypatch.setattr(Tridiagonal, "eigenvectors", recorded)
    d = 100
    _, k = partial_projector(torch.from_numpy(_covariance(d, 2 * d, seed=8)), gamma)
    assert asked == [(d - k, d)] if side == "core" else [(0, d - k)]
    assert (k < d - k) if side == "core" else (d - k < k)


def test_grouped_wide_caches_are_reduced_group_by_group_and_left_as_they_were(monkeypatch):
    reduced: list[int] = []
    real = Tridiagonal.__init__

    def recorded(self: Tridiagonal, covariance: np.ndarray) -> None:
        reduced.append(covariance.shape[0])
        real(self, covariance)

    monkeypatch.setattr(Tridiagonal, "__init__", recorded)
    d = WIDE + 8
    groups = torch.stack(
        [torch.from_numpy(_covariance(d, 2 * d, seed=seed, decades=1.0)) for seed in (9, 10)]
    )
    before = groups.clone()
    projection, k = layer_projector(groups, 0.5)
    assert torch.equal(groups, before)  # the cache is read, never written
    assert reduced == [d, d]  # one reduction per group
    assert projection.basis.shape[0] == 2 and projection.basis.dtype == torch.float64
    cores = [core_gradient_space(group, 0.5) for group in groups]
    assert k == sum(core.shape[1] for core in cores)
    for matrix, core in zip(projection.matrix(), cores, strict=True):
        assert _angle_sine(matrix, residual_projector(core)) < 1e-8
