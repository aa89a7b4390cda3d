"""Conditional GETs for the reads a dashboard polls: one ETag mechanism for all of them.

A polled route names the topics its body shows (``service.changes.Topic``); its ETag is a
digest of the caller's tenant, the request target and those topics' change stamps. A poll
whose ``If-None-Match`` carries the current ETag is answered 304 from one indexed lookup,
before the handler runs, so nothing of the body is read or built.

The tags are weak (RFC 9110, 8.8.1): they vouch for the data, not for the bytes, and a body
that reports its own time (the overview's ``as_of``) stays semantically the same between
two changes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response

from service import changes
from service.api.deps import CurrentCaller, SessionDep, require
from service.changes import Topic
from service.enums import Scope
from service.version import VERSION

__all__ = ["polled", "install", "entity_tag", "matches"]

# A release that changes what bodies look like must not answer 304 to tags of the old.
REPRESENTATION = VERSION

_ETAG_HEADER = {
    "description": "weak validator of this answer; send it back as If-None-Match",
    "schema": {"type": "string"},
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": {"ETag": _ETAG_HEADER}},
    304: {
        "description": "Not Modified: nothing this answer shows has changed since the ETag "
        "sent in If-None-Match (no body)",
        "headers": {"ETag": _ETAG_HEADER},
    },
}


class NotModified(Exception):
    def __init__(self, etag: str) -> None:
        super().__init__(etag)
        self.etag = etag


def entity_tag(tenant_id: str, target: str, stamps: tuple[int, ...]) -> str:
    payload = json.dumps([REPRESENTATION, tenant_id, target, stamps])
    return f'W/"{hashlib.sha256(payload.encode()).hexdigest()[:32]}"'


def matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison against each listed tag (RFC 9110, 13.1.2). ``*`` is not honoured:
    whether the resource exists is only known by building it, so such a poll is answered
    in full, which is always allowed."""
    opaque = etag.removeprefix("W/")
    return any(
        candidate.strip().removeprefix("W/") == opaque for candidate in if_none_match.split(",")
    )


def polled(*topics: Topic, scope: Scope | None = None) -> dict[str, Any]:
    """Route options for a polled read: the scope check (when given) runs first, then the
    conditional check; and the ETag, If-None-Match and 304 in the OpenAPI document."""

    def check(
        request: Request,
        response: Response,
        session: SessionDep,
        caller: CurrentCaller,
        if_none_match: Annotated[
            str | None, Header(description="ETags of answers the caller already holds")
        ] = None,
    ) -> None:
        # The stamps are read before the body: a change that lands in between makes the next
        # poll a 200 again, never a 304 over a stale body.
        stamps = changes.read(session, tenant_id=caller.tenant_id, topics=topics)
        target = f"{request.url.path}?{request.url.query}"
        etag = entity_tag(caller.tenant_id, target, stamps)
        if if_none_match is not None and matches(if_none_match, etag):
            raise NotModified(etag)
        response.headers["ETag"] = etag

    dependencies = [require(scope)] if scope is not None else []
    return {"dependencies": [*dependencies, Depends(check)], "responses": RESPONSES}


def install(app: FastAPI) -> None:
    @app.exception_handler(NotModified)
    async def not_modified(_: Request, exc: NotModified) -> Response:
        return Response(status_code=304, headers={"ETag": exc.etag})
