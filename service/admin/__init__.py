"""The admin dashboard: static files served at ``/admin`` by the API process.

No build step and nothing fetched at run time: ``static/`` holds the page, its script and
style, and the vendored charting library (``static/vendor/README.md``). The page is a
client of the public JSON API only, signed in with an API key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from service.static_files import SecuredFiles

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


def mount(app: FastAPI) -> None:
    files = SecuredFiles(directory=STATIC, html=True, headers=SECURITY_HEADERS)
    app.mount("/admin", files, name="admin")
