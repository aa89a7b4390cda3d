"""The core-space cost benchmark measures what it says, on a covariance like a layer's."""

from __future__ import annotations

import math

import pytest
import torch

import ml.pgu.core_space as core_space_module
from benchmarks import core_space
from benchmarks.unlearning import core_space_line
from ml.pgu.core_space import core_gradient_space, full_projection


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


def test_the_refined_float32_stage_finds_the_exact_cut_and_is_exact_on_a_full_window():
    cpu = torch.device("cpu")
    sides = []
    for decades, seed in ((1.3, 0), (3.0, 1)):  # the cut past d / 2, then before it
        c = core_space.covariance(160, seed=seed, decades=decades, device=cpu)
        exact, k = full_projection(c, 0.95)
        plain, plain_k = core_space.float32_projection(c, 0.95)
        refined, refined_k = core_space.refined_float32(c, 0.95)
        assert plain_k == refined_k == k
        assert refined.spans_range == exact.spans_range
        sides.append(refined.spans_range)
        assert min(k, 160 - k) + core_space.MARGIN < 160  # a window short of every vector
        basis = refined.basis  # orthonormal in float64: a projector
        eye = torch.eye(basis.shape[1], dtype=torch.float64)
        assert torch.allclose(basis.T @ basis, eye, atol=1e-12)
        angle = core_space.principal_angle(refined.matrix(), exact.matrix())
        plain_angle = core_space.principal_angle(plain.matrix(), exact.matrix())
        assert angle <= plain_angle
        # a window of every vector: the Rayleigh-Ritz step is a float64 eigh of C itself
        whole, whole_k = core_space.refined_float32(c, 0.95, margin=160)
        assert whole_k == k
        assert core_space.principal_angle(whole.matrix(), exact.matrix()) < 1e-8
    assert sides == [True, False]  # U_rest past the cut, then M before it


def test_the_refined_float32_stage_refuses_a_cut_outside_its_window(monkeypatch):
    c = core_space.covariance(64, decades=1.3, device=torch.device("cpu"))
    exact_k = full_projection(c, 0.95)[1]

    def shifted(s: torch.Tensor, gamma: float) -> int:  # float32's guess, far off the cut
        return exact_k if s.dtype == torch.float64 else 60

    monkeypatch.setattr(core_space, "gamma_rank", shifted)
    with pytest.raises(core_space.WindowMissed, match="outside the refined window"):
        core_space.refined_float32(c, 0.95, margin=2)


def test_the_refined_float32_stage_refuses_a_window_that_ends_at_the_cut():
    c = core_space.covariance(160, decades=1.3, device=torch.device("cpu"))
    # no margin: the window is exactly the smaller side, which the step could only rotate
    with pytest.raises(core_space.WindowMissed):
        core_space.refined_float32(c, 0.95, margin=0)


def test_a_row_prints_the_float32_stages_against_the_exact_subspace():
    row = core_space.measure(200, gamma=0.95, device=torch.device("cpu"), repeats=1, decades=1.3)
    assert 200 - row["k"] + core_space.MARGIN < 200  # the window short of every vector
    assert row["refined"] > 0
    assert row["refined_angle"] <= row["float32_angle"]


def test_a_row_reports_no_refined_stage_where_its_window_missed_the_cut(monkeypatch):
    def missed(c: torch.Tensor, gamma: float) -> None:
        raise core_space.WindowMissed("the cut fell outside the refined window")

    monkeypatch.setattr(core_space, "refined_float32", missed)
    row = core_space.measure(48, gamma=0.95, device=torch.device("cpu"), repeats=1)
    assert math.isnan(row["refined"]) and math.isnan(row["refined_angle"])
    assert row["float32_angle"] >= 0  # the plain float32 stage still measured


def test_the_scenario_s_table_gives_float32_columns_to_ungrouped_layers_only():
    cpu = torch.device("cpu")
    groups = torch.stack([core_space.covariance(16, seed=s, device=cpu) for s in (1, 2)])
    wide = core_space.covariance(200, decades=1.3, device=cpu)
    rows = core_space.layer_rows({"fc.weight": wide, "conv.weight": groups}, 0.95, cpu)
    plain, grouped = (core_space_line("class 0", row).split("|")[1:-1] for row in rows)
    assert len(plain) == len(grouped) == 11
    assert [cell.strip() for cell in plain[:4]] == [
        "class 0",
        "fc.weight",
        "200",
        str(rows[0]["k"]),
    ]
    assert float(plain[8]) >= 0 and float(plain[9]) <= float(plain[10])  # refined, no worse
    assert [cell.strip() for cell in grouped[8:]] == ["-", "-", "-"]
