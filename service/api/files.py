"""Files streamed from disk with Range support (Starlette's ``FileResponse``), whose range
errors answer problem+json like every other client error: a malformed ``Range`` is a 422,
one outside the file a 416 with ``Content-Range: bytes */<size>``."""

from __future__ import annotations

import os

from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from service.api.problems import problem

__all__ = ["RangedFile"]


class RangedFile(FileResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = Headers(scope=scope).get("range")
        if asked is not None:
            size = os.stat(self.path).st_size
            try:
                self._parse_range_header(asked, size)
            except MalformedRangeHeader as malformed:
                answer = problem(
                    422,
                    "Invalid input",
                    malformed.content,
                    "invalid-input",
                    errors=[{"loc": ["header", "range"], "msg": malformed.content}],
                )
                return await answer(scope, receive, send)
            except RangeNotSatisfiable:
                answer = problem(
                    416,
                    "Range not satisfiable",
                    f"the file has {size} bytes",
                    "range-not-satisfiable",
                )
                answer.headers["Content-Range"] = f"bytes */{size}"
                return await answer(scope, receive, send)
        await super().__call__(scope, receive, send)
