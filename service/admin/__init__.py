"""The admin dashboard: static files served at ``/admin`` by the API process.

No build step and nothing fetched at run time: ``static/`` holds the page, its script and
style, and the vendored charting library (``static/vendor/README.md``). The page is a
client of the public JSON API only, signed in with an API key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["mount", "STATIC"]

STATIC = Path(__file__).parent / "static"

# The page holds an API key in session storage, so it runs only its own scripts, loads
# nothing from elsewhere, cannot be framed, and sends no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag), so an upgrade is seen at once
}


class DashboardFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount(app: FastAPI) -> None:
    app.mount("/admin", DashboardFiles(directory=STATIC, html=True), name="admin")
