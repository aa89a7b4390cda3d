"""What docs/unlearners.md says each method does with BatchNorm's running statistics, and
those statistics in a state dict, for the tests that hold the methods to it."""

from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["documented_batchnorm", "running_statistics"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "unlearners.md"
SECTION = re.compile(r"^## (\w+)\n(.*?)(?=^## |\Z)", re.M | re.S)


def documented_batchnorm() -> dict[str, str]:
    """Method -> the first word of its section's "BatchNorm:" line: ``frozen`` (the
    statistics are the base version's) or ``re-estimated`` (trained)."""
    found = {}
    for name, body in SECTION.findall(DOC.read_text()):
        line = re.search(r"^\*\*BatchNorm:\*\* ([\w-]+):", body, re.M)
        assert line is not None, f"docs/unlearners.md: the {name} section states no BatchNorm"
        found[name] = line.group(1)
    return found


def running_statistics(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every BatchNorm layer's running mean and variance in ``state``, by name."""
    return {name: t for name, t in state.items() if name.endswith(("running_mean", "running_var"))}
