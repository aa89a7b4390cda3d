"""What the OpenAPI document promises a generated client: clean operation ids and tags,
the scope each operation needs (and that the service refuses a key without it), typed
bulk items, job progress and method params, an example of every JSON body, and a client
that ``openapi-python-client`` generates from it and that imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.api.examples import REQUEST_EXAMPLES
from service.enums import Scope

ANY_KEY = {"/v1/me", "/v1/architectures", "/v1/unlearners"}
DUMMY = {
    "request_id": "x",
    "model_id": "x",
    "number": "1",
    "job_id": "x",
    "key_id": "x",
    "dataset_id": "x",
    "key": "x",
    "delivery_id": "x",
    "webhook_id": "x",
}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


@pytest.fixture
def document(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def test_every_operation_has_a_clean_unique_id_and_a_tag(document):
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in ids), ids
    assert all(operation.get("tags") for _, _, operation in _operations(document))
    named = {(path, method): op["operationId"] for path, method, op in _operations(document)}
    assert named["/v1/deletion-requests", "post"] == "create_deletion_request"
    assert named["/v1/deletion-requests:bulk", "post"] == "create_deletion_requests_bulk"
    assert named["/v1/deletion-requests/{request_id}", "get"] == "get_deletion_request"
    assert named["/v1/jobs", "get"] == "list_jobs"


def test_every_v1_operation_states_its_scope(document):
    for path, method, operation in _operations(document):
        if not path.startswith("/v1/"):
            assert "x-required-scope" not in operation
            continue
        scope = operation.get("x-required-scope")
        if path in ANY_KEY:
            assert scope is None and "Any valid API key." in operation["description"]
            continue
        assert scope in {s.value for s in Scope}, (method, path)
        assert f"Required scope: `{scope}`" in operation["description"], (method, path)
    ingest = document["paths"]["/v1/deletion-requests"]["post"]
    assert ingest["x-required-scope"] == "requests:write"
    assert document["paths"]["/v1/keys"]["get"]["x-required-scope"] == "admin"
    assert document["paths"]["/v1/jobs"]["get"]["x-required-scope"] == "models:read"


def test_a_key_without_the_stated_scope_is_refused_everywhere(client, document, key_for):
    """The document and the checks agree: with every scope but the one an operation states,
    a key is answered 403 there."""
    every = [s.value for s in Scope if s is not Scope.ADMIN]
    checked = 0
    for path, method, operation in _operations(document):
        scope = operation.get("x-required-scope")
        if scope is None:
            continue
        headers = key_for([s for s in every if s != scope])
        url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: DUMMY[m.group(1)], path)
        answer = client.request(method, url, headers=headers, json={})
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
        assert repr(scope) in answer.json()["detail"]
        checked += 1
    assert checked >= 30


def test_bulk_items_job_progress_and_method_params_are_typed(document):
    schemas = document["components"]["schemas"]
    bulk = schemas["Body_create_deletion_requests_bulk"]["properties"]["requests"]
    assert bulk["items"] == {"$ref": "#/components/schemas/DeletionRequestCreate"}
    assert schemas["BulkRejection"]["properties"]["problem"]["$ref"].endswith("/Problem")
    assert schemas["JobRead"]["properties"]["progress"]["$ref"].endswith("/JobProgress")
    assert set(schemas["JobProgress"]["properties"]) == {"stage", "step", "total"}
    variants = {
        v["properties"]["name"]["const"]: v["properties"]["params"]["$ref"]
        for v in schemas["UnlearnerSpec"]["oneOf"]
    }
    assert set(variants) == set(schemas["UnlearnerSpec"]["properties"]["name"]["enum"])
    pgu = schemas[variants["pgu"].rsplit("/", 1)[-1]]
    assert "gamma" in json.dumps(pgu["properties"])
    architectures = {v["properties"]["name"]["const"] for v in schemas["ArchitectureSpec"]["oneOf"]}
    assert {"mlp", "torchvision"} <= architectures
    assert all(
        ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[-1] in schemas
        for ref in re.findall(r'"\$ref": "([^"]+)"', json.dumps(document))
    )


def test_every_json_body_has_an_example_the_service_accepts(document):
    from service.audits.schemas import AuditCreate
    from service.callbacks.schemas import WebhookCreate, WebhookUpdate
    from service.datasets.schemas import DatasetCreate
    from service.deletion_requests.schemas import DeletionRequestCreate
    from service.keys.schemas import KeyCreate, KeyRotate
    from service.models.schemas import ModelCreate, ModelUpdate

    models = {
        "DatasetCreate": DatasetCreate,
        "ModelCreate": ModelCreate,
        "ModelUpdate": ModelUpdate,
        "DeletionRequestCreate": DeletionRequestCreate,
        "AuditCreate": AuditCreate,
        "KeyCreate": KeyCreate,
        "KeyRotate": KeyRotate,
        "WebhookCreate": WebhookCreate,
        "WebhookUpdate": WebhookUpdate,
    }
    from service.api.events import AuditCompleted, DeletionRequestStatusChanged, VersionPublished

    models["DeletionRequestStatusChanged"] = DeletionRequestStatusChanged
    models["VersionPublished"] = VersionPublished
    models["AuditCompleted"] = AuditCompleted
    bodies = _operations(document) + [
        (name, method, operation)
        for name, operations in document["webhooks"].items()
        for method, operation in operations.items()
    ]
    for path, method, operation in bodies:
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if media is not None:
            assert media.get("example"), (method, path)
    for component, example in REQUEST_EXAMPLES.items():
        if component == "Body_create_deletion_requests_bulk":
            for item in example["requests"]:
                DeletionRequestCreate.model_validate_json(json.dumps(item))
        else:
            models[component].model_validate_json(json.dumps(example))
        assert document["components"]["schemas"][component]["examples"] == [example]


def test_the_status_change_webhook_is_documented_as_it_is_sent(
    client, admin, ready_model, sent_messages, monkeypatch, document
):
    """The payload a receiver really gets validates, strictly, against the documented one."""
    from service.api.events import DeletionRequestStatusChanged
    from tests.helpers.app import configure, train_keys
    from tests.helpers.callbacks import Receiver
    from workers.commands import deliver_callback

    (operation,) = document["webhooks"]["deletion_request.status_changed"].values()
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/DeletionRequestStatusChanged"}
    assert operation["operationId"] == "deletion_request_status_changed"
    configure(monkeypatch, callback_allowed_networks="127.0.0.0/8")
    receiver = Receiver()
    try:
        keys = train_keys(client, admin, ready_model["dataset"]["id"], 1)
        body = {
            "model_id": ready_model["id"],
            "subject_id": "s",
            "sample_keys": keys,
            "callback_url": receiver.url,
        }
        created = client.post("/v1/deletion-requests", headers=admin, json=body).json()
        client.post(f"/v1/deletion-requests/{created['id']}/cancel", headers=admin)
        for task, args, _ in list(sent_messages):
            if task == "unlearnd.deliver_callback":
                deliver_callback(*args)
        (payload,) = receiver.bodies()
    finally:
        receiver.close()
    sent = DeletionRequestStatusChanged.model_validate_json(json.dumps(payload))
    assert sent.status == "cancelled" and sent.request_id == created["id"]


def test_a_client_generated_from_the_document_imports(document, tmp_path):
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    config = tmp_path / "config.yaml"
    config.write_text("post_hooks: []\n")
    generator = Path(sys.executable).with_name("openapi-python-client")
    generated = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(tmp_path / "unlearnd_generated"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout
    probe = (
        "import inspect\n"
        "from unlearnd_generated.api.deletion_requests import create_deletion_request\n"
        "from unlearnd_generated.api.jobs import get_job\n"
        "from unlearnd_generated.models import DeletionRequestCreate, JobProgress\n"
        "print(inspect.signature(create_deletion_request.sync))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert imported.returncode == 0, imported.stderr
    assert "DeletionRequestCreate" in imported.stdout and "idempotency_key" in imported.stdout
