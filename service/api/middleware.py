"""Plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on the hot path):
HTTP metrics by route template, and the body-size limit."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.problems import problem


class ObserveAndLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if self._too_large(scope):
            response = problem(
                413,
                "Payload too large",
                f"the body is over {self.max_body_bytes} bytes",
                "too-large",
            )
            await response(scope, receive, send_observed)
        else:
            await self.app(scope, receive, send_observed)
        route = scope.get("route")
        handler = getattr(route, "path", "unmatched")  # never the raw path: bounded labels
        if handler == "/metrics":
            return
        method = scope["method"]
        metrics.HTTP_REQUESTS.labels(method, handler, str(status["code"])).inc()
        metrics.HTTP_DURATION.labels(method, handler).observe(time.perf_counter() - started)

    def _too_large(self, scope: Scope) -> bool:
        if scope["method"] == "POST" and scope["path"].endswith("/versions"):
            return False  # weight uploads have their own, larger limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                return value.isdigit() and int(value) > self.max_body_bytes
        return False
