"""What every request passes before any of its body is read (plain ASGI):

1. for ``/v1/...``, who is calling: a bearer key (the scheme in any case), else 401; an
   address with too many failed authentications is answered 429 before its key is looked
   up, so guessing keys is slow and costs the database nothing;
2. whether the key may call now (``UNLEARN_RATE_LIMIT_PER_SECOND``), else 429 with
   ``Retry-After``;
3. a body that is counted as it streams in, chunked or not, and refused with 413 the moment
   it passes its limit (``UNLEARN_MAX_BODY_BYTES``; weight uploads
   ``UNLEARN_MAX_UPLOAD_BYTES``), so no route ever buffers more than that;
4. every ``/v1`` answer marked ``Cache-Control: no-store``: it is one tenant's data,
   answered to one key, and no shared or browser cache may keep it. Polled reads keep
   their ETags: a client revalidates with ``If-None-Match`` itself (the dashboard does),
   which needs no stored copy.

The caller is left in the request's state for ``deps.current_caller``; scopes are checked
per route.
"""

from __future__ import annotations

import math
import re
import time

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import answer_for, problem
from service.keys import service as keys
from service.rate_limits import Rate, limiter_for
from service.settings import Settings

__all__ = ["Gate", "BodyTooLarge", "CALLER"]

CALLER = "caller"  # the authenticated key (``keys.Caller``) in the request state
# An address seen not locked out is not asked about again for this long (unless it fails
# here meanwhile): the check is a Redis round trip, on every call otherwise. A lockout
# caused through another API process therefore reaches this one within a second.
CLEAR_SECONDS = 1.0
MAX_CLEAR = 10_000
UPLOAD = re.compile(r"^/v1/models/[^/]+/versions$")
NO_STORE = (b"cache-control", b"no-store")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body; FastAPI re-raises HTTPExceptions met while parsing,
    and the problem handlers answer it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is over {limit} bytes")


class Gate:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter_for(settings.broker_url)
        self.key_rate = (
            Rate(settings.rate_limit_per_second, settings.rate_limit_burst)
            if settings.rate_limit_per_second > 0
            else None
        )
        failures = settings.auth_failures_per_minute
        self.failure_rate = Rate(failures / 60.0, failures) if failures > 0 else None
        self._clear: dict[str, float] = {}  # address -> until when it counts as not locked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/v1" or scope["path"].startswith("/v1/"):
            send = _not_stored(send)
            refusal = await self._admit(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        limit = self._body_limit(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _admit(self, scope: Scope) -> Response | None:
        """None when the caller may go on; the refusal otherwise."""
        address = (scope.get("client") or ("unknown",))[0]
        failures = f"auth-fail:{address}"
        if self.failure_rate and not self._clear_now(address):
            wait = await self.limiter.take(failures, self.failure_rate, consume=False)
            if wait:
                return _rate_limited(wait, "too many failed authentications from this address")
            if len(self._clear) >= MAX_CLEAR:
                self._clear.clear()
            self._clear[address] = time.monotonic() + CLEAR_SECONDS
        token = _bearer(Headers(scope=scope).get("authorization", ""))
        caller = None
        if token:
            try:
                caller = keys.cached(token) or await run_in_threadpool(
                    keys.authenticate_token, token
                )
            except Exception as error:
                answer = answer_for(error)
                if answer is None:
                    raise
                return answer
        if caller is None:
            self._clear.pop(address, None)  # this process asks the shared bucket again
            if self.failure_rate and (wait := await self.limiter.take(failures, self.failure_rate)):
                return _rate_limited(wait, "too many failed authentications from this address")
            detail = (
                "unknown, revoked or expired API key"
                if token
                else "send an API key as 'Authorization: Bearer <key>'"
            )
            return problem(401, "Unauthorized", detail, "unauthorized")
        key_bucket = f"key:{caller.key_id}"
        if self.key_rate and (wait := await self.limiter.take(key_bucket, self.key_rate)):
            return _rate_limited(wait, "this key's request rate is over its limit")
        scope.setdefault("state", {})[CALLER] = caller
        return None

    def _clear_now(self, address: str) -> bool:
        """Whether this address was seen not locked out less than CLEAR_SECONDS ago (and
        has not failed here since)."""
        until = self._clear.get(address)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._clear[address]
        return False

    def _body_limit(self, scope: Scope) -> int:
        if scope["method"] == "POST" and UPLOAD.match(scope["path"]):
            return self.settings.max_upload_bytes
        return self.settings.max_body_bytes


def _not_stored(send: Send) -> Send:
    async def marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"cache-control" for name, _ in headers):
                headers.append(NO_STORE)
            message = {**message, "headers": headers}
        await send(message)

    return marked


def _bearer(authorization: str) -> str | None:
    """The token of ``Bearer <token>`` (RFC 7235: the scheme is case-insensitive)."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _rate_limited(wait: float, detail: str) -> Response:
    seconds = max(1, math.ceil(wait))
    return problem(429, "Too many requests", detail, "rate-limited", retry_after=seconds)


def _too_large(limit: int) -> Response:
    return problem(413, "Payload too large", f"the body is over {limit} bytes", "too-large")
