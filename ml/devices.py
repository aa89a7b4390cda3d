"""Which torch device jobs run on, from ``UNLEARN_DEVICE``.

- ``cpu``: the CPU.
- ``cuda`` or ``cuda:N``: that GPU; refused (:class:`DeviceUnavailable`) when torch sees no
  such device, so a worker asked for a GPU it lacks stops at start instead of failing, or
  crawling through, every job.
- ``auto``: CUDA device 0 when torch sees one, else the CPU. :func:`expected_gpu` says
  when that CPU is likely a mistake (a GPU was given to the process, torch cannot use it).

Whether torch sees a device is asked with ``torch.cuda.device_count()``, which counts
through NVML without initialising CUDA. A Celery worker resolves its device in its main
process before forking its pool; ``torch.cuda.is_available()`` initialises the CUDA driver
(cuInit), after which no forked child could use CUDA. If NVML counts a device that the
CUDA runtime then cannot open (a driver older than torch's CUDA), the first job fails with
torch's error rather than running on the CPU unnoticed.
"""

from __future__ import annotations

import glob
import os

import torch

__all__ = [
    "DeviceUnavailable",
    "expected_gpu",
    "resolve_device",
    "torch_build",
]

# The NVIDIA driver's device files; the NVIDIA container runtime mounts them into a
# container that reserved a GPU.
NVIDIA_DEVICE_FILES = "/dev/nvidia[0-9]*"


class DeviceUnavailable(RuntimeError):
    """``UNLEARN_DEVICE`` names a GPU this process cannot use."""


def torch_build() -> str:
    """torch's version and the CUDA it was built with, for messages and labels."""
    return f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}"


def resolve_device(preference: str) -> torch.device:
    """The device ``preference`` (a value of ``UNLEARN_DEVICE``) means in this process."""
    count = torch.cuda.device_count()
    if preference == "auto":
        return torch.device("cuda", 0) if count else torch.device("cpu")
    device = torch.device(preference)
    if device.type != "cuda":
        return device
    index = device.index or 0
    if index >= count:
        seen = f"sees {count} CUDA device{'s' if count != 1 else ''}" if count else "sees no GPU"
        raise DeviceUnavailable(
            f"UNLEARN_DEVICE={preference}, but torch ({torch_build()}) {seen}; give this "
            "process a GPU, or set UNLEARN_DEVICE to cpu or auto"
        )
    return torch.device("cuda", index)


def expected_gpu() -> str | None:
    """Why this process looks meant to have a GPU, or None: ``CUDA_VISIBLE_DEVICES`` names
    devices, or the NVIDIA driver's device files are present."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible != "-1":
        return f"CUDA_VISIBLE_DEVICES={visible}"
    files = sorted(glob.glob(NVIDIA_DEVICE_FILES))
    if files:
        return f"{files[0]} is present"
    return None
