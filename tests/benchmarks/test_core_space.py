"""The core-space cost benchmark measures what it says, on a covariance like a layer's."""

from __future__ import annotations

import torch

import ml.pgu.core_space as core_space_module
from benchmarks import core_space
from ml.pgu.core_space import core_gradient_space


def test_the_synthetic_covariance_spreads_its_spectrum_like_a_layer_s():
    c = core_space.covariance(96, device=torch.device("cpu"))
    assert c.dtype == torch.float64 and torch.equal(c, c.T)
    eigenvalues = torch.linalg.eigvalsh(c)
    assert eigenvalues.min() > 0  # 2d columns: full rank
    assert 1e4 < float(eigenvalues.max() / eigenvalues.min()) < 1e8  # decades apart


def test_the_angle_is_that_of_two_projectors_subspaces():
    e = torch.eye(2, dtype=torch.float64)
    u = torch.tensor([[3**0.5 / 2], [0.5]], dtype=torch.float64)  # e_1 turned by 30 degrees
    assert abs(core_space.principal_angle(e[:, :1] @ e[:1], u @ u.T) - 30.0) < 1e-9
    assert core_space.principal_angle(e[:, :1] @ e[:1], e[:, 1:] @ e[1:]) == 90.0


def test_a_row_times_the_stage_and_sizes_its_core_space(capsys):
    row = core_space.measure(64, gamma=0.9, device=torch.device("cpu"), repeats=1)
    c = core_space.covariance(64, device=torch.device("cpu"))
    assert row["k"] == core_gradient_space(c, 0.9).shape[1] < 64
    assert min(row["full"], row["partial"], row["eigenvalues"], row["gemm"]) > 0
    assert row["angle"] < 1e-6  # the two stages find the same subspace
    assert core_space.main(["--dims", "32,48", "--threads", "1", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("|")[1].strip() for line in lines[3:]] == ["32", "48"]


def test_layer_rows_compare_pgu_s_stage_with_the_full_eigh_per_layer_and_group(monkeypatch):
    monkeypatch.setattr(core_space_module, "PARTIAL_ABOVE", 64)  # fc.weight takes the partial
    wide = core_space.covariance(68, decades=1.3, device=torch.device("cpu"))
    groups = torch.stack(
        [core_space.covariance(24, seed=s, device=torch.device("cpu")) for s in (1, 2)]
    )
    rows = core_space.layer_rows(
        {"fc.weight": wide, "conv.weight": groups}, 0.95, torch.device("cpu")
    )
    assert [(row["layer"], row["d"]) for row in rows] == [
        ("fc.weight", 68),
        ("conv.weight", 24),
    ]
    assert rows[0]["k"] == core_gradient_space(wide, 0.95).shape[1]
    assert rows[1]["k"] == sum(core_gradient_space(g, 0.95).shape[1] for g in groups)
    assert all(row["angle"] < 1e-6 and min(row["full"], row["pgu"]) > 0 for row in rows)
