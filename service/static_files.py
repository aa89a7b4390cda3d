"""Static files served with security headers of their own (the dashboard, the API docs)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["SecuredFiles"]


class SecuredFiles(StaticFiles):
    """``StaticFiles`` whose every answer carries ``headers`` (a CSP, nosniff, ...)."""

    def __init__(self, *, headers: dict[str, str], **options: Any) -> None:
        super().__init__(**options)
        self.headers = headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.headers)
        return response
