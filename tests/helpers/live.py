"""The API served over real sockets by uvicorn in this process."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from tests.helpers.network import free_port


class LiveServer:
    """The API served by uvicorn on a free port in this process: real sockets, so a test
    can see how much of a body the server reads before it answers."""

    def __init__(self, **options: Any) -> None:
        """``options`` go to ``uvicorn.Config`` (e.g. the proxy settings ``serve`` uses)."""
        from service.app import create_app

        self.port = free_port()
        config = uvicorn.Config(create_app(), port=self.port, log_level="warning", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream(
        self, head: str, total: int, *, preamble: bytes = b"", chunk: int = 64 * 1024
    ) -> tuple[int, int]:
        """Send ``head`` then a chunked body (``preamble``, then filler) of up to ``total``
        bytes, stopping as soon as the server answers; returns (status, bytes sent)."""
        sent = 0
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
            if preamble:
                sock.sendall(f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n")
            sock.setblocking(False)
            block = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
            answer = b""
            deadline = time.monotonic() + 60
            while sent < total and time.monotonic() < deadline:
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    pass
                except ConnectionError:
                    break
                if answer:
                    break
                try:
                    sock.sendall(block)
                    sent += chunk
                except BlockingIOError:
                    time.sleep(0.001)
                except (BrokenPipeError, ConnectionResetError):
                    break
            sock.setblocking(True)
            if not answer:
                answer = sock.recv(65536)
        return int(answer.split(b" ", 2)[1]), sent
