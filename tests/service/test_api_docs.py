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


def test_the_schema_is_as_strict_as_validation(client, admin, ready_model):
    """What the OpenAPI document allows is what the service accepts: method and architecture
    names as enums of what is installed, class labels and the bulk Idempotency-Key bounded."""
    from ml import architectures, unlearners

    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["UnlearnerSpec"]["properties"]["name"]["enum"] == sorted(
        unlearners.list_unlearners()
    )
    names = components["ArchitectureSpec"]["properties"]["name"]["enum"]
    assert set(names) == set(architectures.architectures.names()) and "torchvision" in names
    labels = components["DeletionRequestCreate"]["properties"]["class_labels"]["anyOf"][0]
    assert labels["items"]["minimum"] == 0 and labels["items"]["maximum"] == 99_999
    (header,) = schema["paths"]["/v1/deletion-requests:bulk"]["post"]["parameters"]
    bounds = header["schema"]["anyOf"][0]
    assert (bounds["minLength"], bounds["maxLength"]) == (1, 196)

    body = {"model_id": ready_model["id"], "subject_id": "s", "class_labels": [2**70]}
    refused = client.post("/v1/deletion-requests", headers=admin, json=body)
    assert refused.status_code == 422
    bulk = {"requests": [{**body, "class_labels": [1]}]}
    for key, status in (("k" * 197, 422), ("k" * 196, 200)):
        answer = client.post(
            "/v1/deletion-requests:bulk", headers={**admin, "Idempotency-Key": key}, json=bulk
        )
        assert answer.status_code == status, answer.text
