"""The hardening probe's cases against a served process (`unlearnd serve`, the embedded
default): what a penetration tester's second round found, replayed at the edge as a
client would send it. ``make test`` runs it small; ``make fuzz`` runs it at
UNLEARN_PROBE_SCALE=10 (ten times the connections and guesses) and prints what it measured.

- header floods: many connections each sending a head past the limit (431 or closed),
  and half-sent heads (closed by the server within its header timeout), while the
  server's memory stays bounded and it goes on answering;
- callback URLs in every IPv6 transition form of a loopback or metadata address: 422;
- X-Forwarded-For spoofing: bad keys with a new forwarded address each are still one
  client (the peer), locked out after its failures;
- the batch-sinking pairs: a PGU ``layer_gamma`` naming an unknown layer (422 at the
  PATCH), and class deletions that together would leave no class (409 at submission).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.app import create_dataset, create_model
from tests.helpers.network import free_port
from tests.helpers.processes import Processes, wait_for

pytestmark = pytest.mark.slow

SCALE = int(os.environ.get("UNLEARN_PROBE_SCALE", "1"))
HEADER_TIMEOUT = 2.0
TRANSITION_FORMS = [
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo of 127.0.0.1
]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _flood(port: int, head: bytes) -> tuple[int | None, float]:
    """Send one oversized head; the status answered (None: closed without one) and the
    seconds until the server closed."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    return status, time.monotonic() - started


def _half_sent(port: int) -> float:
    """Open a connection, send part of a head and stop: seconds until the server closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


@pytest.fixture
def served(sqlite_env, tmp_path) -> Any:
    admin_key = "probe-" + uuid.uuid4().hex
    port = free_port()
    settings = {
        **sqlite_env,
        "bootstrap_admin_key": admin_key,
        "header_timeout_seconds": str(HEADER_TIMEOUT),
        "auth_failures_per_minute": "10",
        "rate_limit_per_second": "0",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = Processes(settings, logs)
    server = processes.start("serve", "--port", str(port))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "serve")
        yield port, server.pid, {"Authorization": f"Bearer {admin_key}"}
    finally:
        processes.stop_all()


def test_the_probe_cases_are_refused_at_the_served_edge(served):
    port, pid, admin = served
    base = f"http://127.0.0.1:{port}"
    measured: dict[str, Any] = {}

    # Header floods: heads past 64 KiB, many at once; the memory they may cost is bounded.
    before = _rss_kib(pid)
    many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(1600))  # ~110 KB
    head = b"GET /v1/me HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        floods = list(pool.map(lambda _: _flood(port, head), range(40 * SCALE)))
    measured["floods"] = (len(floods), time.monotonic() - started)
    assert all(status in (431, None) for status, _ in floods), floods[:5]
    assert max(seconds for _, seconds in floods) < 10
    grown = (_rss_kib(pid) - before) / 1024
    measured["rss_growth_mib"] = grown
    assert grown < 100, f"the server grew {grown:.0f} MiB under {len(floods)} floods"

    # Half-sent heads are closed by the server within its header timeout.
    with ThreadPoolExecutor(max_workers=50) as pool:
        held = list(pool.map(lambda _: _half_sent(port), range(50 * SCALE)))
    measured["half_sent_closed_after_s"] = max(held)
    assert max(held) < HEADER_TIMEOUT + 5, f"a half-sent head stayed open {max(held):.1f} s"
    assert httpx.get(f"{base}/healthz").status_code == 200

    with httpx.Client(base_url=base, headers=admin, timeout=60) as api:
        dataset = create_dataset(api, {})  # type: ignore[arg-type]
        model = create_model(api, {}, dataset["id"], weights="upload")  # type: ignore[arg-type]

        # Transition forms of loopback and metadata addresses are refused as callbacks.
        for url in TRANSITION_FORMS:
            answer = api.post(
                "/v1/deletion-requests",
                json={
                    "model_id": model["id"],
                    "subject_id": "probe",
                    "class_labels": [0],
                    "callback_url": url,
                },
            )
            assert answer.status_code == 422, (url, answer.text)

        # The batch-sinking pairs are refused when asked, not when their batch runs.
        patched = api.patch(
            f"/v1/models/{model['id']}",
            json={"unlearner": {"name": "pgu", "params": {"layer_gamma": {"nope": 0.5}}}},
        )
        assert patched.status_code == 422, patched.text
        half = {"model_id": model["id"], "subject_id": "probe"}
        first = api.post("/v1/deletion-requests", json={**half, "class_labels": [0, 1, 2, 3, 4]})
        assert first.status_code == 202, first.text
        rest = api.post("/v1/deletion-requests", json={**half, "class_labels": [5, 6, 7, 8, 9]})
        assert rest.status_code == 409, rest.text

    # Spoofed X-Forwarded-For: no proxy is trusted, so every guess is the peer's.
    started = time.monotonic()
    guesses = [
        httpx.get(
            f"{base}/v1/me",
            headers={
                "Authorization": f"Bearer ulk_nope_{n}",
                "X-Forwarded-For": f"203.0.113.{n % 250}",
            },
        ).status_code
        for n in range(20 * SCALE)
    ]
    refilled = int((time.monotonic() - started) * 10 / 60) + 1  # 10 a minute come back
    measured["guesses"] = (guesses.count(401), guesses.count(429))
    assert guesses[:11] == [401] * 10 + [429]
    assert guesses.count(401) <= 10 + refilled
    print(f"\nprobe at scale {SCALE}: {measured}")
