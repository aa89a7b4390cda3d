"""The interactive API docs come from the service itself, under a policy that runs only
this origin's scripts; nothing is loaded from a CDN."""

from __future__ import annotations

import re


def test_the_docs_page_and_its_assets_are_served_here_under_a_policy(client):
    page = client.get("/docs/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(not s.startswith(("http:", "https:", "//")) for s in sources)
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    for source in sources:
        asset = client.get(source if source.startswith("/") else f"/docs/{source}")
        assert asset.status_code == 200, source
        assert asset.headers["content-security-policy"]  # this page's or the dashboard's
    assert "SwaggerUIBundle" in client.get("/docs/vendor/swagger-ui-bundle.js").text
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "unlearnd"
