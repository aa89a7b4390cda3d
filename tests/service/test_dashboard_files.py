"""The dashboard's files as the API process serves them: no CDN, a pinned library with its
licence, and headers that keep a page holding an API key to itself."""

from __future__ import annotations

import hashlib
import re

from service.admin import STATIC


def test_served_at_admin_with_a_strict_policy(client):
    redirect = client.get("/admin", follow_redirects=False)
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/admin/")
    page = client.get("/admin/")
    assert page.status_code == 200 and "unlearnd admin" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    for asset in ["app.js", "app.css", "favicon.svg", "vendor/chart.umd.min.js"]:
        response = client.get(f"/admin/{asset}")
        assert response.status_code == 200, asset
        assert "content-security-policy" in response.headers
    assert client.get("/admin/%2e%2e/__init__.py").status_code == 404  # no way out of static/
    assert client.get("/admin/nope.js").status_code == 404


def test_nothing_is_fetched_from_elsewhere():
    for path in [STATIC / "index.html", STATIC / "app.js", STATIC / "app.css"]:
        text = path.read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), path
        assert 'fetch("http' not in text and "fetch('http" not in text, path


def test_the_vendored_library_matches_its_recorded_checksum_and_has_its_licence():
    vendor = STATIC / "vendor"
    recorded = re.search(r"sha256 `([0-9a-f]{64})`", (vendor / "README.md").read_text())
    assert recorded is not None
    library = (vendor / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(library).hexdigest() == recorded.group(1)
    assert b"Chart.js v4.6.1" in library[:200]
    assert "MIT License" in (vendor / "chart.js-LICENSE.md").read_text()
