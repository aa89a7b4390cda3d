"""The API's interactive documentation at ``/docs``: Swagger UI served by the service itself.

FastAPI's default page loads Swagger UI from a CDN at a floating version, with no integrity
check and no Content-Security-Policy, on the same origin as the dashboard that keeps an API
key in session storage. Here the page, its one script and a vendored Swagger UI release
(``static/vendor/README.md``: version and checksums) come from this process, under a policy
that runs only scripts of this origin (Swagger UI sets inline styles, so styles may be
inline). ReDoc, which FastAPI also loads from a CDN, is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from service.static_files import SecuredFiles

__all__ = ["mount"]

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def mount(app: FastAPI) -> None:
    files = SecuredFiles(directory=STATIC, html=True, headers=SECURITY_HEADERS)
    app.mount("/docs", files, name="api-docs")
