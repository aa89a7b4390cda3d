"""Request heads are bounded before the app runs: 431 past the size limit, 408 (or a plain
close) past the deadline; what follows a head (a body, the next request) is not counted."""

from __future__ import annotations

import re
import socket
import time

import pytest

from tests.helpers.app import configure
from tests.helpers.live import LiveServer
from workers.http_edge import BoundedHttpProtocol


@pytest.fixture
def live(env, monkeypatch):
    configure(monkeypatch, max_header_bytes=65536, header_timeout_seconds=1.5)
    with LiveServer(http=BoundedHttpProtocol) as server:
        yield server


def _exchange(live: LiveServer, data: bytes, *, wait: float = 10) -> tuple[bytes, float]:
    """Send ``data`` (as much as the server takes), read until the server closes; the
    answer and the seconds until the close."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", live.port), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused part-way: the answer may still be there to read
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer, time.monotonic() - started


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "headers",
    [
        b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(2000)),  # many
        b"X-Big: " + b"y" * 200_000 + b"\r\n",  # one large value
    ],
    ids=["many-headers", "one-large-header"],
)
def test_a_head_past_the_limit_is_431_and_closed(live, headers):
    answer, seconds = _exchange(live, b"GET /v1/me HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert _status(answer) == 431, answer[:200]
    assert b"header-too-large" in answer
    assert seconds < 5
    answer, _ = _exchange(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(answer) == 200  # the server goes on


@pytest.mark.parametrize("first", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_a_head_past_the_limit_never_reaches_the_app_even_pipelined(live, first):
    """Sent in one piece, alone or after a small request: the oversized head is refused
    (431, or the connection closed while the first answer was on its way), never served."""
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(1200))  # ~90 KB
    answer, _ = _exchange(live, first + b"GET /v1/me HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert b"HTTP/1.1 401" not in answer  # /v1/me without a key would answer 401
    assert answer.count(b"HTTP/1.1 ") <= 1 + (first != b"")


def test_a_half_sent_head_is_408_and_closed_at_the_deadline(live):
    answer, seconds = _exchange(live, b"GET /v1/me HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
    assert _status(answer) == 408 and b"header-timeout" in answer
    assert 1.0 < seconds < 5


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(live):
    answer, seconds = _exchange(live, b"")
    assert answer == b"" and 1.0 < seconds < 5


def test_a_body_after_the_head_is_not_counted_and_keep_alive_goes_on(live, admin):
    body = b'{"requests": [' + b" " * 300_000 + b"]}"
    post = (
        b"POST /v1/deletion-requests:bulk HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (admin["Authorization"].encode(), len(body))
    ) + body
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer, seconds = _exchange(live, post + get)
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 200], answer[:300]  # the bulk call read its body, then /healthz
    assert seconds < 8  # and the idle connection was closed at the deadline
