"""A callback target: an HTTP endpoint on 127.0.0.1 that records what it is sent; and the
delivery of the callbacks a test's service sent (no worker needed)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records what it is sent and answers with the
    statuses it is given (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/unlearn?src=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


def deliver_sent(sent_messages: list[tuple[str, list[str], str]]) -> None:
    """Deliver every callback the service sent (tests keep messages instead of a worker)."""
    from workers.commands import deliver_callback

    while sent_messages:
        task, args, queue = sent_messages.pop(0)
        if task == "unlearnd.deliver_callback":
            assert queue == "callbacks"
            deliver_callback(*args)
