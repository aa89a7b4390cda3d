"""The outermost layer (plain ASGI, cheaper than Starlette's BaseHTTPMiddleware on the hot
path): a request id for every request (``X-Request-ID``, the client's own when it is a sane
token), HTTP metrics by route template, and one structured access-log line.

The access log names the route template and never the raw path or query string: those
carry subject ids (``?subject_id=``) and sample keys (``/samples/train/00017``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.api.gate import CALLER

access = logging.getLogger("unlearnd.access")
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        token = logs.context.set({"request_id": request_id})
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            logs.context.reset(token)

    @staticmethod
    def _record(scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")  # bounded labels, no raw path
        if route == "/metrics":
            return
        method = scope["method"]
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_DURATION.labels(method, route).observe(seconds)
        if access.isEnabledFor(logging.INFO):
            caller = scope.get("state", {}).get(CALLER)
            access.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("-",))[0],
                    "key_id": getattr(caller, "key_id", None),
                    "tenant_id": getattr(caller, "tenant_id", None),
                },
            )
