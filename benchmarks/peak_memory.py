"""The peak resident memory of this process, for the benchmarks' tables."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["peak_mib"]


def peak_mib() -> float:
    """This process's peak resident memory since its exec, in MiB (VmHWM; ``ru_maxrss``
    would carry over a forking parent's peak, and is the fallback where /proc has none)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
