"""Ports on 127.0.0.1, and what a missing service means: outside CI a test that needs it
skips with a reason, in CI (``CI=true``) it fails."""

from __future__ import annotations

import os
import socket
import time

import pytest

IN_CI = os.environ.get("CI") == "true"


def service_missing(what: str) -> None:
    """Skip outside CI; in CI a missing service is a failure, never a skip."""
    message = f"{what} is not reachable; start it or run in CI"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")
