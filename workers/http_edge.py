"""The HTTP server's own limits on a request's head, before any of the app runs.

uvicorn's httptools protocol buffers a request line and headers without bound and waits
for them without a deadline: 100 MB of small headers took a server from 1.2 GB to 2.7 GB
before the gate could answer 401, and 3,000 half-sent heads stayed open 40 s. This
protocol counts the bytes of each head as they arrive and answers 431 (then closes) past
``UNLEARN_MAX_HEADER_BYTES``, and closes a connection whose head is not complete
``UNLEARN_HEADER_TIMEOUT_SECONDS`` after it opened or after its previous response (408 if
any of it had arrived). Bodies are bounded by the app (``service.api.gate``), idle
keep-alive connections by uvicorn's ``timeout_keep_alive``. A deployment behind a proxy
gets the same limits there too (the compose file's nginx).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import PROBLEM_TYPE_BASE
from service.settings import get_settings

__all__ = ["BoundedHttpProtocol"]


def _answer(status: int, reason: str, slug: str, detail: str) -> bytes:
    problem = {"type": PROBLEM_TYPE_BASE + slug, "title": reason, "status": status}
    body = json.dumps({**problem, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpProtocol(HttpToolsProtocol):
    """httptools with a size limit and a deadline on every request head."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        settings = get_settings()
        self._max_head = settings.max_header_bytes
        self._head_timeout = settings.header_timeout_seconds
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._head_tail = b""  # the head's last 3 bytes: its end may span two chunks
        self._message_head = 0  # this message's request line and headers, as parsed
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Judged before the parser sees the chunk: a whole oversized head often arrives in
        # one chunk, which the parser would complete and hand to the app. Only the head's
        # bytes count (up to its blank line); a body in the same chunk does not.
        if self._in_head:
            window = self._head_tail + data
            end = window.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._head_tail))
            self._head_tail = window[-3:]
            if self._head_bytes > self._max_head:
                self._refuse(
                    431, "Request Header Fields Too Large", "header-too-large", "too large"
                )
                return
        super().data_received(data)

    # The parser's own count of each message's head: a head that follows another request
    # in the same chunk (pipelined) is parsed within that chunk, past the count above.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_head = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._message_head += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._message_head += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        if self._message_head > self._max_head:
            self._refuse(431, "Request Header Fields Too Large", "header-too-large", "too large")
            return  # never handed to the app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next is the next request's.
        self._in_head, self._head_bytes, self._head_tail = True, 0, b""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self._in_head or busy or self.transport.is_closing():
            return  # a response on its way (a pipelined request) is never cut off
        if self._head_bytes:
            self._refuse(408, "Request Timeout", "header-timeout", "not in time")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, reason: str, slug: str, how: str) -> None:
        if self.transport.is_closing():
            return
        self._in_head = False
        self._cancel_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # an answer to an earlier request is on its way: no 431
            return
        detail = f"the request line and headers came {how} (at most {self._max_head} bytes "
        detail += f"within {self._head_timeout:g} s)"
        self.transport.write(_answer(status, reason, slug, detail))
        self.transport.close()
