"""Timing a stage for a benchmark's table: the best of a few runs, and what it returned."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["best_of"]

T = TypeVar("T")


def best_of(
    run: Callable[[], T], repeats: int, *, device: torch.device, warm_up: bool
) -> tuple[float, T]:
    """(the best of ``repeats`` timed runs, what the last one returned). With ``warm_up``
    one untimed run comes first; on CUDA each run is waited for before its clock stops."""
    if warm_up:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best, result
