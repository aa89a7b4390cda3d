"""All the eigenvalues of a symmetric matrix, and the eigenvectors of one end of its spectrum.

Every dense symmetric eigensolver in LAPACK (``torch.linalg.eigh`` included) runs three
stages: it reduces C to a tridiagonal T = Q^T C Q (``dsytrd``, about 4/3 d^3 flops), solves
T, and rotates each eigenvector back (Q z, 2 d^2 flops a vector). PGU's gamma rule needs
every eigenvalue but, for the projector I - M M^T = U_rest U_rest^T, only the eigenvectors
of one side of the cut: whichever is smaller. :class:`Tridiagonal` keeps the stages apart
so that a caller reduces once, reads every eigenvalue (``dsterf``, O(d^2)), then pays for
the eigenvectors it asks for alone: T's by MRRR (``dstemr``, O(d) a vector) and the
rotation back (``dormqr`` with the reduction's Householder reflectors).

These are LAPACK's own routines (SciPy's bindings). The reduction and the rotation back
are backward stable (the same as eigh's); MRRR, where MKL's eigh uses divide and conquer,
guarantees small residuals and numerically orthogonal vectors when it reports success,
with an orthogonality measured somewhat worse than divide and conquer's (Demmel, Marques,
Parlett and Voemel, 2008). By Davis-Kahan the subspace of the eigenvalues below a cut
then sits within about (residual + loss of orthogonality) / gap of the exact one, gap
being the eigenvalues' distance across the cut; ``ml.pgu.core_space`` checks each
projector it builds and falls back to eigh on a bad one, and
``tests/ml/test_tridiagonal.py`` compares the two after random downdates.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

__all__ = ["Tridiagonal"]


class Tridiagonal:
    """C = Q T Q^T for a symmetric float64 matrix C (its lower triangle is read, as by
    ``torch.linalg.eigh``; C itself is never written).

    ``eigenvalues()`` gives all of C's eigenvalues, ascending; ``eigenvectors(start, stop)``
    the orthonormal eigenvectors of the eigenvalues ``start`` to ``stop - 1`` in that
    order, as the columns of a (d, stop - start) array. Raises ``numpy.linalg.LinAlgError``
    where LAPACK reports a failure (MRRR can, rarely, on very tight clusters).
    """

    def __init__(self, covariance: np.ndarray) -> None:
        c = np.asarray(covariance, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1]:
            raise ValueError(f"Expected a square matrix, got shape {c.shape}")
        self.size = c.shape[0]
        work = int(lapack.dsytrd_lwork(self.size, lower=1)[0])
        own = np.array(c, order="F")  # the one copy dsytrd overwrites with its reflectors
        reflectors, self._diagonal, self._off_diagonal, self._tau, info = lapack.dsytrd(
            own, lower=1, lwork=max(work, 1), overwrite_a=1
        )
        _check("dsytrd", info)
        self._reflectors = reflectors

    def eigenvalues(self) -> np.ndarray:
        if self.size == 1:  # SciPy's binding refuses an empty off-diagonal
            return self._diagonal.copy()
        values, info = lapack.dsterf(self._diagonal, self._off_diagonal)
        _check("dsterf", info)
        return values

    def eigenvectors(self, start: int, stop: int) -> np.ndarray:
        n = self.size
        if not 0 <= start <= stop <= n:
            raise ValueError(f"Invalid eigenvector range [{start}, {stop}) of {n}")
        if start == stop:
            return np.zeros((n, 0))
        if n == 1:
            return np.ones((1, 1))
        # dstemr wants e padded to n; range 2 is LAPACK's RANGE = 'I' (1-based, inclusive).
        # A fresh e for every call: SciPy's dstemr overwrites the e it is given (not d), and
        # a second call on that one computes the eigenvectors of another matrix.
        off = np.zeros(n)
        off[:-1] = self._off_diagonal
        lwork, liwork, info = lapack.dstemr_lwork(self._diagonal, off, 2, 0.0, 0.0, start + 1, stop)
        _check("dstemr_lwork", info)
        found, _, z, info = lapack.dstemr(
            self._diagonal, off, 2, 0.0, 0.0, start + 1, stop,
            compute_v=1, lwork=int(lwork), liwork=int(liwork),
        )  # fmt: skip
        _check("dstemr", info)
        if found != stop - start:
            raise np.linalg.LinAlgError(f"dstemr found {found} of {stop - start} eigenvectors")
        vectors = np.asfortranarray(z[:, :found])
        # Q = H(1) ... H(n-1), H(i) = I - tau_i v_i v_i^T with v_i zero above row i + 1, 1
        # there and the reduction's column i below: exactly the reflectors of a QR
        # factorisation of C's rows 2..n, so dormqr applies Q to z's rows 2..n (what
        # LAPACK's own dormtr does for a lower reduction; SciPy binds dormqr only).
        rows, tau = self._reflectors[1:, : n - 1], self._tau[: n - 1]
        work = int(lapack.dormqr("L", "N", rows, tau, vectors[1:], -1)[1][0])
        rotated, _, info = lapack.dormqr("L", "N", rows, tau, vectors[1:], max(work, 1))
        _check("dormqr", info)
        vectors[1:] = rotated
        return vectors


def _check(routine: str, info: int) -> None:
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK {routine} failed (info {info})")
