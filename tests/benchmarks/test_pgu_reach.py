"""The reach measurement reads the share of the forget inputs that PGU's projection lets a
step change, on covariances whose answer is known."""

from __future__ import annotations

import pytest
import torch

from benchmarks.pgu_reach import energy_outside
from ml.pgu import layer_projector

E = torch.eye(6, dtype=torch.float64)


def _gram(*rows: torch.Tensor) -> torch.Tensor:
    stacked = torch.stack(rows)
    return stacked.T @ stacked


# the retained data fill e_0..e_2 (the core space at gamma 0.9) and barely touch the rest
RETAINED = torch.diag(torch.tensor([10.0, 10.0, 10.0, 1e-3, 1e-3, 1e-3], dtype=torch.float64))


@pytest.mark.parametrize(
    ("forget", "share"),
    [
        (_gram(2 * E[0], 2 * E[4]), 0.5),  # half of D_f's energy outside the core
        (_gram(E[1], 3 * E[2]), 0.0),  # D_f wholly inside: PGU cannot move it
        (_gram(E[3] + E[5]), 1.0),  # wholly outside
        (_gram(E[0] + E[3]), 0.5),  # one row, half in each
    ],
)
def test_the_share_is_the_forget_energy_in_the_projection_s_range(forget, share):
    projection, k = layer_projector(RETAINED, 0.9)
    assert k == 3
    assert energy_outside(forget, projection) == pytest.approx(share, abs=1e-12)


def test_a_grouped_layer_sums_its_groups_and_an_empty_forget_set_has_no_share():
    second = torch.diag(torch.tensor([1e-3, 1e-3, 10.0, 10.0, 10.0, 1e-3], dtype=torch.float64))
    projection, k = layer_projector(torch.stack([RETAINED, second]), 0.9)
    assert k == 6
    # group 0: 4 inside, 4 outside; group 1: 12 outside (e_0 is past its cut). The groups'
    # energies add up (16 of 20), not their shares (a mean of 1/2 and 1 would be 3/4)
    forget = torch.stack([_gram(2 * E[0], 2 * E[4]), _gram(2 * E[0], 2 * E[5], 2 * E[5])])
    assert energy_outside(forget, projection) == pytest.approx(16 / 20, abs=1e-12)
    assert (
        energy_outside(torch.zeros(6, 6, dtype=torch.float64), layer_projector(RETAINED, 0.9)[0])
        == 0.0
    )
