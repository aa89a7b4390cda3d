"""The device a process that runs jobs (a worker, or ``serve`` with the embedded worker)
uses, chosen once when it starts: logged, exported as ``unlearn_worker_info``, and refused
when ``UNLEARN_DEVICE`` names a GPU the process cannot use (``ml.devices``)."""

from __future__ import annotations

import logging

import torch

from ml.devices import DeviceUnavailable, expected_gpu, resolve_device, torch_build
from service import metrics
from service.bootstrap import RefusedToStart

__all__ = ["announce_device", "announced", "build"]

log = logging.getLogger(__name__)

_announced: torch.device | None = None


def build() -> tuple[str, str]:
    """torch's version and the CUDA it was built with ("none" for a CPU build)."""
    return torch.__version__, torch.version.cuda or "none"


def announced() -> torch.device | None:
    """The device :func:`announce_device` chose in this process, if it ran."""
    return _announced


def announce_device(preference: str) -> torch.device:
    """The device ``preference`` (``UNLEARN_DEVICE``) means here, logged and exported;
    :class:`RefusedToStart` when it names a GPU this process lacks. ``auto`` settling on the
    CPU while the process looks meant for a GPU (``ml.devices.expected_gpu``) is a warning:
    every job would run, slowly, on the CPU."""
    try:
        device = resolve_device(preference)
    except DeviceUnavailable as error:
        raise RefusedToStart(str(error)) from None
    why = expected_gpu() if device.type == "cpu" and preference == "auto" else None
    if why is not None:
        log.warning(
            "UNLEARN_DEVICE=auto runs jobs on the CPU although a GPU was expected (%s): "
            "torch (%s) sees no CUDA device",
            why,
            torch_build(),
        )
    log.info("jobs run on %s (%s)", device, torch_build(), extra={"device": str(device)})
    torch_version, cuda = build()
    metrics.WORKER_INFO.labels(device=str(device), torch=torch_version, cuda=cuda).set(1)
    global _announced
    _announced = device
    return device
